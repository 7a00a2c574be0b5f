//! Density: many daemons started at once (each on its own copy of the prepared state),
//! the time until every control channel answers and until every TPM runs (INIT and
//! TPM2_Startup, sent one daemon after the other), their total memory, and a clean
//! CMD_SHUTDOWN of all.

use std::time::{Duration, Instant};

use crate::common::tpm2::{self, StartupType};
use crate::context::{Bench, EXIT_TIMEOUT, START_TIMEOUT, StartState, init};
use crate::daemon::{Daemon, Flavor, Launch, Transport, send_shutdown};
use crate::machine::Memory;
use crate::report::{Goal, Row};
use crate::stats::Samples;
use crate::tools::Tool;
use crate::wire::DataConn;

const SECTION: &str = "density";
const MIB: f64 = 1024.0;

struct Fleet {
    all_answer: Duration,
    all_running: Duration,
    memory: Memory,
    shutdown: Duration,
    clean_exits: usize,
}

#[derive(Default)]
struct Series {
    all_answer: [Samples; 2],
    all_running: [Samples; 2],
    pss: [Samples; 2],
    rss: [Samples; 2],
    private: [Samples; 2],
    anonymous: [Samples; 2],
    shutdown: [Samples; 2],
    clean_exits: [Samples; 2],
}

pub fn run(bench: &mut Bench) {
    let sizes = bench.plan.density_sizes.clone();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for n in sizes {
        let mut series = Series::default();
        for round in 0..bench.plan.density_rounds {
            for flavor in Flavor::in_order(round) {
                let fleet = fleet(bench, flavor, n);
                let i = flavor.index();
                series.all_answer[i].push_millis(fleet.all_answer);
                series.all_running[i].push_millis(fleet.all_running);
                series.pss[i].push(fleet.memory.pss as f64 / MIB);
                series.rss[i].push(fleet.memory.rss as f64 / MIB);
                series.private[i].push(fleet.memory.private as f64 / MIB);
                series.anonymous[i].push(fleet.memory.anonymous as f64 / MIB);
                series.shutdown[i].push_millis(fleet.shutdown);
                series.clean_exits[i].push(fleet.clean_exits as f64);
            }
        }
        report(bench, n, &series, n == largest);
    }
}

fn report(bench: &mut Bench, n: usize, series: &Series, with_goal: bool) {
    let report = &mut bench.report;
    let rows = [
        (
            "spawn -> all control channels answer",
            "ms",
            &series.all_answer,
        ),
        (
            "spawn -> all TPMs running (INIT+Startup each)",
            "ms",
            &series.all_running,
        ),
        ("total PSS, all running", "MiB", &series.pss),
        ("total RSS, all running", "MiB", &series.rss),
        ("total private (USS), all running", "MiB", &series.private),
        ("total anonymous, all running", "MiB", &series.anonymous),
        ("CMD_SHUTDOWN to all -> all exited", "ms", &series.shutdown),
        ("clean exits (status 0)", "count", &series.clean_exits),
    ];
    for (metric, unit, samples) in rows {
        let row = Row::compare(
            SECTION,
            format!("{n} instances: {metric}"),
            unit,
            samples,
            false,
        );
        if with_goal && metric.starts_with("total PSS") {
            report.goal(Goal {
                name: format!("total PSS of {n} instances"),
                measured: row.ratio().unwrap_or(f64::NAN),
                limit: 0.80,
                detail: "sum of smaps_rollup Pss, all TPMs running, median of rounds".into(),
            });
        }
        report.add(row);
    }
}

fn fleet(bench: &Bench, flavor: Flavor, n: usize) -> Fleet {
    let dirs: Vec<_> = (0..n)
        .map(|_| bench.dirs("fleet", StartState::Prepared))
        .collect();
    let started = Instant::now();
    let mut daemons: Vec<Daemon> = dirs
        .iter()
        .map(|(state_dir, run_dir)| {
            Daemon::start(
                &Launch {
                    flavor,
                    state_dir,
                    run_dir,
                    transport: Transport::Unix,
                    tool: Tool::Plain,
                },
                &bench.pinning,
            )
        })
        .collect();
    let mut ctrls: Vec<_> = daemons
        .iter_mut()
        .map(|daemon| daemon.wait_control(START_TIMEOUT).0)
        .collect();
    let all_answer = started.elapsed();
    let startup = tpm2::startup(StartupType::Clear);
    let _data: Vec<DataConn> = daemons
        .iter()
        .zip(&mut ctrls)
        .map(|(daemon, ctrl)| {
            init(ctrl, 0);
            let mut data = DataConn::connect(&daemon.data);
            data.expect_ok(&startup, "TPM2_Startup");
            data
        })
        .collect();
    let all_running = started.elapsed();
    let memory = daemons
        .iter()
        .map(|daemon| Memory::of(daemon.pid()))
        .fold(Memory::default(), Memory::add);

    let shutdown_started = Instant::now();
    for ctrl in &mut ctrls {
        send_shutdown(ctrl);
    }
    let clean_exits = daemons
        .iter_mut()
        .map(|daemon| daemon.wait_exit(EXIT_TIMEOUT))
        .filter(|status| status.success())
        .count();
    Fleet {
        all_answer,
        all_running,
        memory,
        shutdown: shutdown_started.elapsed(),
        clean_exits,
    }
}
