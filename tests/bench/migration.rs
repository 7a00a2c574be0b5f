//! The TPM's share of a migration's downtime, as QEMU drives it (libvirt-qemu.md §2.3):
//! on the running source GET_STATEBLOB for the permanent, volatile and savestate blobs
//! (flags DECRYPTED, offset 0), then STOP; on a fresh destination STOP, SET_STATEBLOB
//! for each non-empty blob (a TPM 2 has no savestate, so QEMU sends two) and INIT with
//! DELETE_VOLATILE. The destination must then answer the guest without a new Startup.

use std::time::{Duration, Instant};

use crate::common::ctrl::{self, CtrlClient, be};
use crate::context::{Bench, Launched, Session, StartState, init};
use crate::daemon::{Flavor, Transport};
use crate::report::{Goal, Row};
use crate::small::SmallCommand;
use crate::stats::Samples;
use crate::tools::Tool;
use crate::wire::DataConn;

const SECTION: &str = "migration (TPM's share of downtime)";
const BLOB_TYPES: [(u32, &str); 3] = [(1, "permanent"), (2, "volatile"), (3, "savestate")];
const STATE_FLAG_DECRYPTED: u32 = 1;
const INIT_DELETE_VOLATILE: u32 = 1;

struct Migration {
    source: Duration,
    destination: Duration,
    /// Each control command and its time, in order.
    steps: Vec<(String, Duration)>,
    /// Blob sizes in bytes (0: the source had none of that type).
    sizes: [usize; 3],
}

/// Times each control command of a migration.
struct Steps {
    list: Vec<(String, Duration)>,
}

impl Steps {
    fn time<T>(&mut self, name: String, step: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let value = step();
        self.list.push((name, started.elapsed()));
        value
    }
}

pub fn run(bench: &mut Bench) {
    let mut source: [Samples; 2] = Default::default();
    let mut destination: [Samples; 2] = Default::default();
    let mut total: [Samples; 2] = Default::default();
    let mut sizes = [[0usize; 3]; 2];
    let mut steps: Vec<(String, [Samples; 2])> = Vec::new();
    for round in 0..bench.plan.migration_rounds {
        for flavor in Flavor::in_order(round) {
            let m = migrate(bench, flavor);
            let i = flavor.index();
            source[i].push_millis(m.source);
            destination[i].push_millis(m.destination);
            total[i].push_millis(m.source + m.destination);
            sizes[i] = m.sizes;
            for (name, elapsed) in m.steps {
                match steps.iter_mut().find(|(known, _)| *known == name) {
                    Some((_, samples)) => samples[i].push_millis(elapsed),
                    None => {
                        let mut samples: [Samples; 2] = Default::default();
                        samples[i].push_millis(elapsed);
                        steps.push((name, samples));
                    }
                }
            }
        }
    }
    let report = &mut bench.report;
    report.add(Row::compare(
        SECTION,
        "source: GET_STATEBLOB x3 + STOP",
        "ms",
        &source,
        true,
    ));
    report.add(Row::compare(
        SECTION,
        "destination: SET_STATEBLOB (non-empty) + INIT",
        "ms",
        &destination,
        true,
    ));
    let total_row = Row::compare(SECTION, "total downtime share", "ms", &total, true);
    report.goal(Goal {
        name: "migration downtime share".into(),
        measured: total_row.ratio().unwrap_or(f64::NAN),
        limit: 0.80,
        detail: "median of source + destination steps".into(),
    });
    report.add(total_row);
    for (name, samples) in &steps {
        if samples.iter().all(|s| s.len() > 0) {
            report.add(Row::compare(
                SECTION,
                format!("  {name}"),
                "ms",
                samples,
                false,
            ));
        }
    }
    for (k, (_, name)) in BLOB_TYPES.iter().enumerate() {
        report.add(Row::values(
            SECTION,
            format!("{name} blob size"),
            "bytes",
            sizes.map(|s| s[k] as f64),
        ));
    }
}

fn migrate(bench: &Bench, flavor: Flavor) -> Migration {
    let mut source = Session::start(
        bench,
        flavor,
        StartState::Prepared,
        Transport::Unix,
        Tool::Plain,
    );
    // A little guest activity, so that the volatile state is not the pristine one.
    let extend = SmallCommand::PcrExtend.bytes();
    for _ in 0..3 {
        source.data.expect_ok(&extend, "TPM2_PCR_Extend");
    }
    let expected_pcr = source
        .data
        .expect_ok(&SmallCommand::PcrRead.bytes(), "TPM2_PCR_Read")
        .to_vec();
    let mut destination = Launched::new(
        bench,
        flavor,
        StartState::Empty,
        Transport::Unix,
        Tool::Plain,
    );
    // What QEMU's destination sends before the state arrives.
    expect_rc(&mut destination.ctrl, ctrl::STOP, &[]);
    expect_rc(&mut destination.ctrl, ctrl::SET_BUFFERSIZE, &be(&[4096]));

    let mut steps = Steps { list: Vec::new() };
    let started = Instant::now();
    let blobs = BLOB_TYPES.map(|(blob_type, name)| {
        steps.time(format!("source GET_STATEBLOB {name}"), || {
            get_blob(&mut source.ctrl, blob_type)
        })
    });
    steps.time("source STOP".into(), || {
        expect_rc(&mut source.ctrl, ctrl::STOP, &[])
    });
    let source_done = Instant::now();
    steps.time("destination STOP".into(), || {
        expect_rc(&mut destination.ctrl, ctrl::STOP, &[])
    });
    for ((blob_type, name), blob) in BLOB_TYPES.iter().zip(&blobs) {
        if !blob.is_empty() {
            let mut body = be(&[0, *blob_type, blob.len() as u32]);
            body.extend_from_slice(blob);
            steps.time(format!("destination SET_STATEBLOB {name}"), || {
                expect_rc(&mut destination.ctrl, ctrl::SET_STATEBLOB, &body)
            });
        }
    }
    steps.time("destination INIT(DELETE_VOLATILE)".into(), || {
        init(&mut destination.ctrl, INIT_DELETE_VOLATILE)
    });
    let destination_done = Instant::now();

    let mut data = DataConn::connect(&destination.daemon.data);
    let pcr = data.expect_ok(
        &SmallCommand::PcrRead.bytes(),
        "TPM2_PCR_Read after migration",
    );
    assert_eq!(pcr, expected_pcr, "PCR 16 survives the migration");
    destination
        .daemon
        .shut_down(&mut destination.ctrl, crate::context::EXIT_TIMEOUT);
    source.finish();
    Migration {
        source: source_done - started,
        destination: destination_done - source_done,
        steps: steps.list,
        sizes: blobs.map(|b| b.len()),
    }
}

/// GET_STATEBLOB(DECRYPTED, type, offset 0): the blob, or nothing when the TPM has none
/// of that type (a non-fatal result with bit 0x800, as QEMU accepts).
fn get_blob(ctrl: &mut CtrlClient, blob_type: u32) -> Vec<u8> {
    let reply = ctrl.request(
        ctrl::GET_STATEBLOB,
        &be(&[STATE_FLAG_DECRYPTED, blob_type, 0]),
    );
    match reply.rc {
        0 => reply.body[12..].to_vec(),
        rc if rc & ctrl::TPM_RETRY != 0 => Vec::new(),
        rc => panic!("GET_STATEBLOB({blob_type}) answered {rc:#x}"),
    }
}

fn expect_rc(ctrl: &mut CtrlClient, code: u32, body: &[u8]) {
    let reply = ctrl.request(code, body);
    assert_eq!(
        reply.rc, 0,
        "control command {code:#x} answered {:#x}",
        reply.rc
    );
}
