//! Start-up: from the spawn call to the control channel answering GET_CAPABILITY, and to
//! the first TPM command (CMD_INIT, then TPM2_Startup on the data channel) answered —
//! on an empty state directory (INIT manufactures a TPM) and on the prepared state (what
//! every later start of a VM sees).

use std::time::{Duration, Instant};

use crate::common::tpm2::{self, StartupType};
use crate::context::{Bench, EXIT_TIMEOUT, START_TIMEOUT, StartState, init};
use crate::daemon::{Daemon, Flavor, Launch, Transport};
use crate::report::{Goal, Row};
use crate::stats::Samples;
use crate::tools::Tool;
use crate::wire::DataConn;

const SECTION: &str = "start-up";

struct Times {
    to_control: Duration,
    init: Duration,
    to_first_command: Duration,
}

#[derive(Default)]
struct Series {
    to_control: [Samples; 2],
    init: [Samples; 2],
    to_first_command: [Samples; 2],
}

impl Series {
    fn push(&mut self, flavor: Flavor, times: &Times) {
        let i = flavor.index();
        self.to_control[i].push_millis(times.to_control);
        self.init[i].push_millis(times.init);
        self.to_first_command[i].push_millis(times.to_first_command);
    }
}

pub fn run(bench: &mut Bench) {
    let mut empty = Series::default();
    let mut prepared = Series::default();
    for round in 0..bench.plan.startup_rounds {
        for flavor in Flavor::in_order(round) {
            empty.push(flavor, &measure(bench, flavor, StartState::Empty));
            prepared.push(flavor, &measure(bench, flavor, StartState::Prepared));
        }
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
    report.add(Row::compare(
        SECTION,
        "  of which CMD_INIT (manufacture, empty dir)",
        "ms",
        &empty.init,
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
    let mut data = DataConn::connect(&daemon.data);
    let response = data.transact(&tpm2::startup(StartupType::Clear));
    let to_first_command = daemon.spawned_at.elapsed();
    crate::wire::check_ok(response, "TPM2_Startup");
    daemon.shut_down(&mut ctrl, EXIT_TIMEOUT);
    Times {
        to_control,
        init: init_time,
        to_first_command,
    }
}
