//! TPM2_NV_Write: every write changes the permanent state, which the daemon stores before
//! it answers. vtpm stores durably (temporary file, fdatasync, rename, directory fsync);
//! swtpm 0.7.1 writes and renames without any flush. Next to both: the physical floor
//! of one durable write of the same size on the same filesystem (pwrite into an existing
//! file, fdatasync), and two atomic replacements done bare, without a daemon: vtpm's
//! (two flushes) and one with a single flush after the rename.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::tpm2::{self, NV_OWNER_RW_NO_DA};
use crate::context::{Bench, PERMALL, Session};
use crate::daemon::Flavor;
use crate::machine::Filesystem;
use crate::report::{Goal, Row};
use crate::stats::Samples;
use crate::wire::check_ok;

const SECTION: &str = "durable TPM2_NV_Write";
pub const INDEX: u32 = 0x0150_0020;
pub const INDEX_SIZE: u16 = 64;
/// Allowed overhead over the floor: one flush per acknowledged change, not two.
const FLOOR_FACTOR: f64 = 1.2;

/// What one round measures, in turn.
#[derive(Clone, Copy)]
enum Writer {
    Daemon(Flavor),
    /// pwrite at offset 0 of an existing file of the same size, then fdatasync.
    Floor,
    /// New temporary file, write, fdatasync, rename over the old, fsync the directory.
    VtpmPatternBare,
    /// New temporary file, write, rename over the old, then one fsync of the file.
    OneFlushBare,
}

/// NV_DefineSpace on a running TPM (owner auth, empty password).
pub fn define_index(session: &mut Session) {
    session.data.expect_ok(
        &tpm2::nv_define_space(INDEX, INDEX_SIZE, NV_OWNER_RW_NO_DA),
        "TPM2_NV_DefineSpace",
    );
}

/// The data of the `n`th write: different every time.
pub fn payload(n: usize) -> [u8; INDEX_SIZE as usize] {
    let mut data = [0u8; INDEX_SIZE as usize];
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = (n.wrapping_mul(31).wrapping_add(i)) as u8;
    }
    data
}

pub fn run(bench: &mut Bench, pair: &mut [Session; 2]) {
    for session in pair.iter_mut() {
        define_index(session);
    }
    let stored_size = std::fs::metadata(pair[Flavor::Vtpm.index()].state_dir.join(PERMALL))
        .expect("vtpm's permanent state after NV_DefineSpace")
        .len() as usize;
    let scratch = bench.root().join("nv-floor");
    std::fs::create_dir_all(&scratch).expect("create the floor directory");
    let floor_file = prepared_floor_file(&scratch, stored_size);
    let bytes = vec![0xa5u8; stored_size];

    let writers = [
        Writer::Daemon(Flavor::Vtpm),
        Writer::Daemon(Flavor::Swtpm),
        Writer::Floor,
        Writer::VtpmPatternBare,
        Writer::OneFlushBare,
    ];
    let mut samples: [Samples; 5] = Default::default();
    let mut written = 0;
    for round in 0..bench.plan.nv_rounds {
        // Rotate who goes first, so that no writer always follows the same one.
        for k in 0..writers.len() {
            let which = (round + k) % writers.len();
            for _ in 0..bench.plan.nv_batch {
                written += 1;
                let elapsed = match writers[which] {
                    Writer::Daemon(flavor) => nv_write(&mut pair[flavor.index()], written),
                    Writer::Floor => timed(|| {
                        floor_file.write_all_at(&bytes, 0)?;
                        floor_file.sync_data()
                    }),
                    Writer::VtpmPatternBare => timed(|| write_like_vtpm(&scratch, &bytes)),
                    Writer::OneFlushBare => timed(|| write_one_flush(&scratch, &bytes)),
                };
                samples[which].push_micros(elapsed);
            }
        }
    }

    let filesystem = Filesystem::of(bench.root());
    let [vtpm, swtpm, floor, pattern, one_flush] = samples;
    let report = &mut bench.report;
    report.note(format!(
        "NV_Write: state and floor files on {}; permanent state {stored_size} bytes",
        filesystem.describe()
    ));
    let daemons = Row::compare(
        SECTION,
        format!("TPM2_NV_Write({INDEX_SIZE} bytes), state {stored_size} B"),
        "us",
        &[vtpm, swtpm],
        true,
    );
    let floor_row = Row::reference(
        SECTION,
        format!("floor: pwrite {stored_size} B in place + fdatasync"),
        "us",
        &floor,
    );
    let vtpm_median = daemons.vtpm.map_or(f64::NAN, |s| s.median);
    let floor_median = floor_row.reference.map_or(f64::NAN, |s| s.median);
    report.goal(Goal {
        name: "durable NV_Write / (write+fdatasync floor)".into(),
        measured: vtpm_median / floor_median,
        limit: FLOOR_FACTOR,
        detail: format!(
            "vtpm {vtpm_median:.0} us, floor {floor_median:.0} us (medians), on {}",
            filesystem.fs_type
        ),
    });
    report.add(daemons);
    report.add(floor_row);
    report.add(Row::reference(
        SECTION,
        "bare: temp+write+fdatasync+rename+dir fsync (vtpm's)",
        "us",
        &pattern,
    ));
    report.add(Row::reference(
        SECTION,
        "bare: temp+write+rename+fsync (one flush)",
        "us",
        &one_flush,
    ));
}

fn nv_write(session: &mut Session, n: usize) -> Duration {
    let command = tpm2::nv_write(INDEX, 0, &payload(n));
    let started = Instant::now();
    let response = session.data.transact(&command);
    let elapsed = started.elapsed();
    check_ok(response, "TPM2_NV_Write");
    elapsed
}

fn timed(write: impl FnOnce() -> std::io::Result<()>) -> Duration {
    let started = Instant::now();
    write().expect("reference write");
    started.elapsed()
}

/// A file of `size` bytes whose blocks are allocated and flushed, so that rewriting it
/// in place needs no metadata change: the least a durable write of that size costs.
fn prepared_floor_file(dir: &Path, size: usize) -> File {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("floor"))
        .expect("create the floor file");
    file.write_all(&vec![0u8; size])
        .expect("fill the floor file");
    file.sync_all().expect("flush the floor file");
    file
}

/// vtpm's store sequence (state/dir.rs) without vtpm.
fn write_like_vtpm(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join("pattern.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp, dir.join("pattern"))?;
    File::open(dir)?.sync_all()
}

/// An atomic replacement with one flush: the file's fsync after the rename also
/// commits the rename on journaling filesystems (ext4, xfs), though POSIX does not
/// promise it.
fn write_one_flush(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join("one-flush.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(bytes)?;
    std::fs::rename(&temp, dir.join("one-flush"))?;
    file.sync_all()
}
