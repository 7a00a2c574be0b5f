//! TPM2_NV_Write: every write changes the permanent state, which the daemon stores before
//! it answers. vtpm replaces the state file atomically and durably with one flush
//! (temporary file, write, rename, fsync: state/dir.rs); swtpm 0.7.1 writes and renames
//! without any flush. Next to both, done bare without a daemon on the same filesystem:
//! the floor of one durable write of the same size (pwrite into an existing file,
//! fdatasync: not atomic, and no metadata changes), vtpm's atomic replacement with one
//! flush, and the same with two flushes (fdatasync before the rename, directory fsync
//! after), as vtpm stored before.
//!
//! The goal compares vtpm with the in-place floor; the goal line also gives the
//! ratio to the atomic one-flush replacement, which is what an atomic update of a whole
//! file costs here (the rename's journal commit, which the in-place floor does not pay).

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
    TwoFlushesBare,
    /// New temporary file, write, rename over the old, then one fsync of the file
    /// (vtpm's sequence).
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
        Writer::TwoFlushesBare,
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
                    Writer::TwoFlushesBare => timed(|| write_two_flushes(&scratch, &bytes)),
                    Writer::OneFlushBare => timed(|| write_one_flush(&scratch, &bytes)),
                };
                samples[which].push_micros(elapsed);
            }
        }
    }

    let filesystem = Filesystem::of(bench.root());
    let [vtpm, swtpm, floor, two_flushes, one_flush] = samples;
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
    let one_flush_row = Row::reference(
        SECTION,
        "bare: temp+write+rename+fsync (one flush, vtpm's sequence)",
        "us",
        &one_flush,
    );
    let median = |row: &Row| row.reference.map_or(f64::NAN, |s| s.median);
    let vtpm_median = daemons.vtpm.map_or(f64::NAN, |s| s.median);
    let (floor_median, atomic_median) = (median(&floor_row), median(&one_flush_row));
    report.goal(Goal {
        name: "durable NV_Write / (write+fdatasync floor)".into(),
        measured: vtpm_median / floor_median,
        limit: FLOOR_FACTOR,
        detail: format!(
            "vtpm {vtpm_median:.0} us (median) on {}; the goal's floor: pwrite in place + \
             fdatasync {floor_median:.0} us; against an atomic replacement with one flush \
             (temp+write+rename+fsync) {atomic_median:.0} us: {:.2}",
            filesystem.fs_type,
            vtpm_median / atomic_median
        ),
    });
    report.add(daemons);
    report.add(floor_row);
    report.add(one_flush_row);
    report.add(Row::reference(
        SECTION,
        "bare: temp+write+fdatasync+rename+dir fsync (two flushes)",
        "us",
        &two_flushes,
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

/// An atomic replacement with two flushes (vtpm's sequence before it needed only one).
fn write_two_flushes(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

/// An atomic replacement with one flush, as vtpm's state/dir.rs does it on ext4: the
/// file's fsync after the rename also commits the rename on journaling filesystems
/// (ext4, xfs), though POSIX does not promise it.
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
