//! One vtpm and one swtpm running side by side from the same prepared state: memory when
//! idle, the small commands and the control channel, durable NV writes, CreatePrimary,
//! and memory after all that — over UNIX sockets; then the small commands over TCP.

use std::time::Instant;

use crate::context::{Bench, Launched, Session, StartState};
use crate::daemon::{Flavor, Transport};
use crate::echo::Echo;
use crate::machine::{Memory, cpu_time_ns};
use crate::report::{Goal, Row};
use crate::small::{self, SmallCommand};
use crate::tools::Tool;
use crate::{nvwrite, primary};

const MEMORY: &str = "memory (smaps_rollup)";
/// The goals use the client on its own CPU; this variant shows the daemons' CPU cost.
const SAME_CPU: &str = "small commands, UNIX socket, client on the daemons' CPU";

pub fn unix(bench: &mut Bench) {
    let mut before_init = [Memory::default(); 2];
    let mut pair = Flavor::BOTH.map(|flavor| {
        let launched = Launched::new(
            bench,
            flavor,
            StartState::Prepared,
            Transport::Unix,
            Tool::Plain,
        );
        before_init[flavor.index()] = Memory::of(launched.daemon.pid());
        launched.run_tpm()
    });
    let idle = memory(&pair);
    memory_rows(bench, "started, before CMD_INIT", &before_init);
    memory_rows(bench, "idle: after INIT + TPM2_Startup", &idle);
    let [vtpm, swtpm] = idle.map(|m| m.anonymous as f64);
    bench.report.goal(Goal {
        name: "idle anonymous memory".into(),
        measured: vtpm / swtpm,
        limit: 0.80,
        detail: "Anonymous of smaps_rollup, TPM running, no command yet".into(),
    });

    let section = "small commands, UNIX socket";
    let mut echo = Echo::start(Transport::Unix, bench.root(), &bench.pinning);
    let ratios = small::run(bench, section, &mut pair, &mut echo);
    let pinning = bench.pinning;
    if pinning.enabled {
        pinning.client_on_daemon_cpu(|| {
            small::run(bench, SAME_CPU, &mut pair, &mut echo);
        });
    }
    drop(echo);
    latency_goal(bench, "small-command latency, UNIX", &ratios);
    idle_cpu(bench, section, &pair);
    small::control_channel(bench, section, &mut pair);
    nvwrite::run(bench, &mut pair);
    primary::run(bench, &mut pair);

    let after = memory(&pair);
    memory_rows(
        bench,
        "after the workload (small, NV, CreatePrimary)",
        &after,
    );
    for session in pair {
        session.finish();
    }
}

pub fn tcp(bench: &mut Bench) {
    let mut pair = Flavor::BOTH.map(|flavor| {
        Session::start(
            bench,
            flavor,
            StartState::Prepared,
            Transport::Tcp,
            Tool::Plain,
        )
    });
    let mut echo = Echo::start(Transport::Tcp, bench.root(), &bench.pinning);
    let ratios = small::run(bench, "small commands, TCP socket", &mut pair, &mut echo);
    drop(echo);
    latency_goal(bench, "small-command latency, TCP", &ratios);
    for session in pair {
        session.finish();
    }
}

/// CPU time the daemons use while no command comes, from right after the last one (so
/// polling for a next command that never comes is included), per second.
fn idle_cpu(bench: &mut Bench, section: &'static str, pair: &[Session; 2]) {
    let pids = Flavor::BOTH.map(|flavor| pair[flavor.index()].daemon.pid());
    let before = pids.map(cpu_time_ns);
    let started = Instant::now();
    std::thread::sleep(bench.plan.idle_time);
    let elapsed = started.elapsed().as_secs_f64();
    let used = [0, 1].map(|i| cpu_time_ns(pids[i]).saturating_sub(before[i]) as f64 / 1e3);
    bench.report.add(Row::values(
        section,
        "daemon CPU time while idle, after the last command",
        "us/s",
        used.map(|us| us / elapsed),
    ));
}

fn memory(pair: &[Session; 2]) -> [Memory; 2] {
    Flavor::BOTH.map(|flavor| Memory::of(pair[flavor.index()].daemon.pid()))
}

fn memory_rows(bench: &mut Bench, when: &str, memory: &[Memory; 2]) {
    let kinds = [
        ("RSS", memory.map(|m| m.rss)),
        ("PSS", memory.map(|m| m.pss)),
        ("private (USS)", memory.map(|m| m.private)),
        ("anonymous", memory.map(|m| m.anonymous)),
    ];
    for (kind, values) in kinds {
        bench.report.add(Row::values(
            MEMORY,
            format!("{kind}, {when}"),
            "KiB",
            values.map(|kib| kib as f64),
        ));
    }
}

/// The goal holds for the worst of the three small commands.
fn latency_goal(bench: &mut Bench, name: &str, ratios: &[(SmallCommand, f64)]) {
    let (worst, ratio) = ratios
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("small-command ratios");
    let all = ratios
        .iter()
        .map(|(c, r)| format!("{} {r:.2}", c.name()))
        .collect::<Vec<_>>()
        .join(", ");
    bench.report.goal(Goal {
        name: name.into(),
        measured: ratio,
        limit: 0.80,
        detail: format!(
            "median ratio of the worst command ({}); {all}",
            worst.name()
        ),
    });
}
