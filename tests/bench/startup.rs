//! Start-up: from the spawn call to the control channel answering GET_CAPABILITY, and to
//! the first TPM command (CMD_INIT, then TPM2_Startup on the data channel) answered —
//! on an empty state directory (INIT manufactures a TPM) and on the prepared state (what
//! every later start of a VM sees). Next to them, the floor: the benchmark's own binary
//! started in the same way, binding a socket and answering one GET_CAPABILITY (exec, the
//! dynamic loader with libc only, Rust's runtime, a socket; nothing of a TPM).

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::tpm2::{self, StartupType};
use crate::context::{Bench, EXIT_TIMEOUT, START_TIMEOUT, StartState, init};
use crate::daemon::{Daemon, Flavor, Launch, Transport};
use crate::report::{Goal, Row};
use crate::stats::Samples;
use crate::tools::Tool;
use crate::wire::{DataAddress, DataConn};

/// The option that makes the benchmark binary the start-up floor.
pub const ANSWER_ONCE: &str = "--answer-once";

const SECTION: &str = "start-up";

struct Times {
    to_control: Duration,
    init: Duration,
    /// Connecting the data channel and TPM2_Startup.
    startup: Duration,
    to_first_command: Duration,
}

#[derive(Default)]
struct Series {
    to_control: [Samples; 2],
    init: [Samples; 2],
    startup: [Samples; 2],
    to_first_command: [Samples; 2],
}

impl Series {
    fn push(&mut self, flavor: Flavor, times: &Times) {
        let i = flavor.index();
        self.to_control[i].push_millis(times.to_control);
        self.init[i].push_millis(times.init);
        self.startup[i].push_millis(times.startup);
        self.to_first_command[i].push_millis(times.to_first_command);
    }
}

pub fn run(bench: &mut Bench) {
    let mut empty = Series::default();
    let mut prepared = Series::default();
    let mut floor = Samples::default();
    for round in 0..bench.plan.startup_rounds {
        for flavor in Flavor::in_order(round) {
            empty.push(flavor, &measure(bench, flavor, StartState::Empty));
            prepared.push(flavor, &measure(bench, flavor, StartState::Prepared));
        }
        floor.push_millis(measure_floor(bench));
    }
    let report = &mut bench.report;
    let to_control = Row::compare(
        SECTION,
        "exec -> control socket answers (empty dir)",
        "ms",
        &empty.to_control,
        true,
    );
    let first = Row::compare(
        SECTION,
        "exec -> first TPM command answered (empty dir)",
        "ms",
        &empty.to_first_command,
        true,
    );
    report.goal(Goal {
        name: "exec -> control socket answering".into(),
        measured: to_control.ratio().unwrap_or(f64::NAN),
        limit: 0.50,
        detail: "median, empty state dir".into(),
    });
    report.goal(Goal {
        name: "exec -> first TPM command".into(),
        measured: first.ratio().unwrap_or(f64::NAN),
        limit: 0.80,
        detail: "median, empty state dir (INIT manufactures)".into(),
    });
    report.add(to_control);
    report.add(Row::reference(
        SECTION,
        "floor: minimal process binds a socket and answers",
        "ms",
        &floor,
    ));
    report.add(Row::compare(
        SECTION,
        "  of which CMD_INIT (manufacture, empty dir)",
        "ms",
        &empty.init,
        true,
    ));
    report.add(Row::compare(
        SECTION,
        "  of which data connect + TPM2_Startup (empty dir)",
        "ms",
        &empty.startup,
        true,
    ));
    report.add(first);
    report.add(Row::compare(
        SECTION,
        "exec -> control socket answers (prepared state)",
        "ms",
        &prepared.to_control,
        true,
    ));
    report.add(Row::compare(
        SECTION,
        "  of which CMD_INIT (load state)",
        "ms",
        &prepared.init,
        true,
    ));
    report.add(Row::compare(
        SECTION,
        "  of which data connect + TPM2_Startup (prepared state)",
        "ms",
        &prepared.startup,
        true,
    ));
    report.add(Row::compare(
        SECTION,
        "exec -> first TPM command answered (prepared state)",
        "ms",
        &prepared.to_first_command,
        true,
    ));
}

/// One start: spawn, control answers, INIT, connect, TPM2_Startup answered; then a
/// clean CMD_SHUTDOWN (not timed).
fn measure(bench: &Bench, flavor: Flavor, start: StartState) -> Times {
    let (state_dir, run_dir) = bench.dirs("start", start);
    let mut daemon = Daemon::start(
        &Launch {
            flavor,
            state_dir: &state_dir,
            run_dir: &run_dir,
            transport: Transport::Unix,
            tool: Tool::Plain,
        },
        &bench.pinning,
    );
    let (mut ctrl, to_control) = daemon.wait_control(START_TIMEOUT);
    let init_started = Instant::now();
    init(&mut ctrl, 0);
    let init_time = init_started.elapsed();
    let startup_started = Instant::now();
    let mut data = DataConn::connect(&daemon.data);
    let response = data.transact(&tpm2::startup(StartupType::Clear));
    let startup = startup_started.elapsed();
    let to_first_command = daemon.spawned_at.elapsed();
    crate::wire::check_ok(response, "TPM2_Startup");
    daemon.shut_down(&mut ctrl, EXIT_TIMEOUT);
    Times {
        to_control,
        init: init_time,
        startup,
        to_first_command,
    }
}

/// The floor: `<benchmark binary> --answer-once <socket>`, timed like a daemon.
fn measure_floor(bench: &Bench) -> Duration {
    let (_, run_dir) = bench.dirs("floor", StartState::Empty);
    let ctrl_path = run_dir.join("ctrl.sock");
    let mut command = Command::new(std::env::current_exe().expect("the benchmark binary"));
    command
        .arg(ANSWER_ONCE)
        .arg(&ctrl_path)
        .env_remove("LD_LIBRARY_PATH");
    let mut floor = Daemon::spawn(
        "floor",
        command,
        &run_dir,
        ctrl_path,
        DataAddress::Unix(run_dir.join("unused")),
        &bench.pinning,
    );
    let (_, elapsed) = floor.wait_control(START_TIMEOUT);
    assert!(
        floor.wait_exit(EXIT_TIMEOUT).success(),
        "the floor process failed"
    );
    elapsed
}

/// `--answer-once <socket>`: bind, answer one GET_CAPABILITY with success, exit.
pub fn answer_once(socket: &Path) {
    let listener = UnixListener::bind(socket).expect("bind the floor socket");
    let (mut stream, _) = listener.accept().expect("accept the client");
    let mut request = [0u8; 4];
    stream.read_exact(&mut request).expect("read the request");
    stream.write_all(&[0; 8]).expect("answer");
}
