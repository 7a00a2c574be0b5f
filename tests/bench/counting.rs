//! Counts that do not depend on the machine's load: user-space instructions per command
//! (callgrind) and system calls per command (strace -c), and where they go.
//!
//! Method: each daemon runs the same session twice under the tool — start, INIT,
//! TPM2_Startup, N commands (2N the second time), CMD_SHUTDOWN — and the difference of
//! the two runs divided by N is the cost of one command, with start-up and exit
//! cancelled out. Callgrind counts the instructions the daemon process executes in user
//! space, all threads and libraries (libtpms, libcrypto, libc) included, the kernel not.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::common::tpm2;
use crate::context::{Bench, EXIT_TIMEOUT, Launched, Session, StartState};
use crate::daemon::{Flavor, Transport};
use crate::nvwrite;
use crate::report::{Goal, Profile, Row};
use crate::small::SmallCommand;
use crate::tools::{self, Tool};

const INSTRUCTIONS: &str = "user-space instructions per command (callgrind)";
/// vtpm's adaptive polling (src/daemon/polling.rs): `poll` and `missed`, never inlined
/// so that their inclusive cost can be told apart.
const POLLING: &str = "vtpm::daemon::polling::Poller::";

/// Instruction ratios vtpm/swtpm of one command.
struct Ratio {
    command: SmallCommand,
    /// Added around TPMLIB_Process, without polling.
    added: f64,
    total: f64,
    /// vtpm's instructions per command in polling.
    polling: f64,
}
const SYSCALLS: &str = "system calls per command (strace -f -c)";
/// Functions listed per daemon and command in the profile.
const TOP: usize = 12;
/// Smaller per-command differences are noise (or rounding) and left out.
const MIN_INSTRUCTIONS: f64 = 0.5;
const MIN_CALLS: f64 = 0.01;

/// A command the counting runs repeat.
struct Counted {
    name: &'static str,
    /// The `n`th command of a run.
    command: Box<dyn Fn(usize) -> Vec<u8>>,
    /// An NV index must exist before NV_Write.
    needs_nv_index: bool,
}

impl Counted {
    fn small(command: SmallCommand) -> Counted {
        let bytes = command.bytes();
        Counted {
            name: command.name(),
            command: Box::new(move |_| bytes.clone()),
            needs_nv_index: false,
        }
    }

    /// New data every time: libtpms stores an NV index only when its data changes.
    fn nv_write() -> Counted {
        Counted {
            name: "TPM2_NV_Write(64 bytes)",
            command: Box::new(|n| tpm2::nv_write(nvwrite::INDEX, 0, &nvwrite::payload(n))),
            needs_nv_index: true,
        }
    }
}

fn small_commands(bench: &Bench) -> Vec<SmallCommand> {
    if bench.plan.count_all_commands {
        SmallCommand::ALL.to_vec()
    } else {
        vec![SmallCommand::GetRandom]
    }
}

/// One session under `tool` with `count` repetitions of the command.
fn counted_run(bench: &Bench, flavor: Flavor, counted: &Counted, count: usize, tool: Tool) {
    let mut session = Session::start(bench, flavor, StartState::Prepared, Transport::Unix, tool);
    if counted.needs_nv_index {
        nvwrite::define_index(&mut session);
    }
    for n in 0..count {
        session.data.expect_ok(&(counted.command)(n), counted.name);
    }
    session.finish();
}

/// A start without INIT: the control channel answers, then CMD_SHUTDOWN.
fn startup_run(bench: &Bench, flavor: Flavor, tool: Tool) {
    let mut launched = Launched::new(bench, flavor, StartState::Prepared, Transport::Unix, tool);
    launched.daemon.shut_down(&mut launched.ctrl, EXIT_TIMEOUT);
}

/// Sums "name (object)" costs per object.
fn by_object(functions: &BTreeMap<String, i64>) -> Vec<(String, f64)> {
    let mut objects: BTreeMap<String, i64> = BTreeMap::new();
    for (name, cost) in functions {
        let object = name
            .rsplit_once(" (")
            .map_or("?", |(_, object)| object.trim_end_matches(')'));
        *objects.entry(object.to_string()).or_insert(0) += cost;
    }
    let mut list: Vec<(String, f64)> = objects
        .into_iter()
        .map(|(object, cost)| (object, cost as f64))
        .collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    list
}

/// Instructions of a start (to the control channel answering) and CMD_SHUTDOWN, and
/// where they go, per library.
fn startup_instructions(bench: &mut Bench) {
    let mut totals = [0.0; 2];
    for flavor in Flavor::BOTH {
        let out = bench
            .root()
            .join(format!("callgrind.{}.startup", flavor.name()));
        let tool = Tool::Callgrind { out: out.clone() };
        startup_run(bench, flavor, tool);
        totals[flavor.index()] = tools::callgrind_total(&out) as f64;
        let functions = tools::callgrind_functions(&out, false);
        let objects = by_object(&functions);
        let mut top: Vec<(String, f64)> = functions
            .iter()
            .map(|(name, &cost)| (name.clone(), cost as f64))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut lines = vec![format!(
            "  {:.0} instructions; per library: {}",
            totals[flavor.index()],
            objects
                .iter()
                .take(6)
                .map(|(object, cost)| format!("{object} {cost:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        lines.extend(
            top.iter()
                .take(TOP)
                .map(|(name, cost)| format!("  {cost:>9.0}  {name}")),
        );
        bench.report.profiles.push(Profile {
            title: format!(
                "callgrind, {} start-up to control answering + CMD_SHUTDOWN: top {TOP} functions (self)",
                flavor.name()
            ),
            lines,
            data: json!({ "daemon": flavor.name(), "total": totals[flavor.index()],
                          "per_object": objects, "per_function": top }),
        });
    }
    bench.report.add(Row::values(
        INSTRUCTIONS,
        "start-up to control answering + CMD_SHUTDOWN (no INIT)",
        "instr",
        totals,
    ));
}

/// Profiles of the N and 2N runs.
struct Pair {
    short: PathBuf,
    long: PathBuf,
}

fn callgrind_pair(bench: &Bench, flavor: Flavor, counted: &Counted, tag: &str) -> Pair {
    let n = bench.plan.callgrind_n;
    let profiles = [n, 2 * n].map(|count| {
        let out = bench
            .root()
            .join(format!("callgrind.{}.{tag}.{count}", flavor.name()));
        let tool = Tool::Callgrind { out: out.clone() };
        counted_run(bench, flavor, counted, count, tool);
        out
    });
    let [short, long] = profiles;
    Pair { short, long }
}

/// Per-command difference of two per-name maps, largest first; differences below
/// `threshold` per command are left out.
fn per_command(
    short: &BTreeMap<String, i64>,
    long: &BTreeMap<String, i64>,
    n: usize,
    threshold: f64,
) -> Vec<(String, f64)> {
    let mut diff: Vec<(String, f64)> = long
        .iter()
        .map(|(name, &cost)| {
            let before = short.get(name).copied().unwrap_or(0);
            (name.clone(), (cost - before) as f64 / n as f64)
        })
        .filter(|(_, per)| per.abs() >= threshold)
        .collect();
    diff.sort_by(|a, b| b.1.total_cmp(&a.1));
    diff
}

pub fn instructions(bench: &mut Bench) {
    startup_instructions(bench);
    let n = bench.plan.callgrind_n;
    let mut ratios = Vec::new();
    for (k, command) in small_commands(bench).into_iter().enumerate() {
        let counted = Counted::small(command);
        let tag = format!("{command:?}");
        let mut totals = [0.0; 2];
        let mut in_libtpms = [0.0; 2];
        let mut polling = [0.0; 2];
        for flavor in Flavor::in_order(k) {
            let pair = callgrind_pair(bench, flavor, &counted, &tag);
            let total = (tools::callgrind_total(&pair.long) as f64
                - tools::callgrind_total(&pair.short) as f64)
                / n as f64;
            let self_cost = per_command(
                &tools::callgrind_functions(&pair.short, false),
                &tools::callgrind_functions(&pair.long, false),
                n,
                MIN_INSTRUCTIONS,
            );
            let inclusive = per_command(
                &tools::callgrind_functions(&pair.short, true),
                &tools::callgrind_functions(&pair.long, true),
                n,
                MIN_INSTRUCTIONS,
            );
            let libtpms = inclusive
                .iter()
                .find(|(name, _)| name.starts_with("TPMLIB_Process ("))
                .map_or(0.0, |(_, per)| *per);
            totals[flavor.index()] = total;
            in_libtpms[flavor.index()] = libtpms;
            polling[flavor.index()] = inclusive
                .iter()
                .filter(|(name, _)| name.starts_with(POLLING))
                .fold(0.0, |sum, (_, per)| sum + per);
            bench.report.profiles.push(function_profile(
                flavor, command, total, libtpms, &self_cost,
            ));
        }
        bench.report.add(Row::values(
            INSTRUCTIONS,
            format!("{}: all", command.name()),
            "instr",
            totals,
        ));
        bench.report.add(Row::values(
            INSTRUCTIONS,
            format!("{}: in TPMLIB_Process", command.name()),
            "instr",
            in_libtpms,
        ));
        bench.report.add(Row::values(
            INSTRUCTIONS,
            format!("{}: outside libtpms", command.name()),
            "instr",
            [0, 1].map(|i| totals[i] - in_libtpms[i]),
        ));
        bench.report.add(Row::values(
            INSTRUCTIONS,
            format!("{}:   of which polling for the next", command.name()),
            "instr",
            polling,
        ));
        let added = Row::values(
            INSTRUCTIONS,
            format!("{}: added around libtpms, without polling", command.name()),
            "instr",
            [0, 1].map(|i| totals[i] - in_libtpms[i] - polling[i]),
        );
        ratios.push(Ratio {
            command,
            added: added.ratio().unwrap_or(f64::NAN),
            total: totals[0] / totals[1],
            polling: polling[Flavor::Vtpm.index()],
        });
        bench.report.add(added);
    }
    let worst = ratios
        .iter()
        .max_by(|a, b| a.added.total_cmp(&b.added))
        .expect("instruction ratios");
    bench.report.goal(Goal {
        name: "instructions per small command (added)".into(),
        measured: worst.added,
        limit: 0.75,
        detail: format!(
            "what each daemon adds around TPMLIB_Process, worst command {}; the total \
             ({:.2} of swtpm's) is bounded by libtpms, the same library in both; not \
             counted: vtpm's polling for the next command, {:.0} instr per command \
             under callgrind (it spends what would be idle time: see the daemons' CPU \
             time per command) (callgrind, difference of {n} and {} commands)",
            worst.command.name(),
            worst.total,
            worst.polling,
            2 * n
        ),
    });
}

fn function_profile(
    flavor: Flavor,
    command: SmallCommand,
    total: f64,
    libtpms: f64,
    self_cost: &[(String, f64)],
) -> Profile {
    let mut lines = vec![format!(
        "  {total:.0} instructions per command, {libtpms:.0} of them inside TPMLIB_Process (inclusive)"
    )];
    lines.extend(
        self_cost
            .iter()
            .take(TOP)
            .map(|(name, per)| format!("  {per:>9.0}  {name}")),
    );
    Profile {
        title: format!(
            "callgrind, {} {}: self instructions per command, top {TOP} functions",
            flavor.name(),
            command.name()
        ),
        lines,
        data: json!({
            "daemon": flavor.name(),
            "command": command.name(),
            "instructions_per_command": total,
            "in_tpmlib_process": libtpms,
            "self_per_function": self_cost,
        }),
    }
}

/// System calls of a start (to the control channel answering) and CMD_SHUTDOWN.
fn startup_syscalls(bench: &mut Bench) {
    let mut totals = [0.0; 2];
    for flavor in Flavor::BOTH {
        let out = bench
            .root()
            .join(format!("strace.{}.startup", flavor.name()));
        startup_run(bench, flavor, Tool::Strace { out: out.clone() });
        let mut calls: Vec<(String, f64)> = tools::strace_counts(&out)
            .into_iter()
            .map(|(name, count)| (name, count as f64))
            .collect();
        calls.sort_by(|a, b| b.1.total_cmp(&a.1));
        totals[flavor.index()] = calls.iter().map(|(_, count)| count).sum();
        bench.report.profiles.push(syscall_profile(
            flavor,
            "start-up to control answering + CMD_SHUTDOWN",
            &calls,
        ));
    }
    bench.report.add(Row::values(
        SYSCALLS,
        "start-up to control answering + CMD_SHUTDOWN (per run)",
        "calls",
        totals,
    ));
}

pub fn syscalls(bench: &mut Bench) {
    startup_syscalls(bench);
    let n = bench.plan.strace_n;
    let mut commands: Vec<Counted> = small_commands(bench)
        .into_iter()
        .filter(|&c| c != SmallCommand::PcrRead)
        .map(Counted::small)
        .collect();
    if bench.plan.count_all_commands {
        commands.push(Counted::nv_write());
    }
    for (k, counted) in commands.iter().enumerate() {
        let mut totals = [0.0; 2];
        for flavor in Flavor::in_order(k) {
            let [short, long] = [n, 2 * n].map(|count| {
                let out = bench
                    .root()
                    .join(format!("strace.{}.{k}.{count}", flavor.name()));
                counted_run(
                    bench,
                    flavor,
                    counted,
                    count,
                    Tool::Strace { out: out.clone() },
                );
                tools::strace_counts(&out)
            });
            let calls = per_command(&short, &long, n, MIN_CALLS);
            totals[flavor.index()] = calls.iter().map(|(_, per)| per).sum();
            bench
                .report
                .profiles
                .push(syscall_profile(flavor, counted.name, &calls));
        }
        bench
            .report
            .add(Row::values(SYSCALLS, counted.name, "calls", totals));
    }
}

fn syscall_profile(flavor: Flavor, command: &str, calls: &[(String, f64)]) -> Profile {
    let list = calls
        .iter()
        .map(|(name, per)| format!("{name} {per:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    Profile {
        title: format!("strace -f -c, {} {command}: system calls", flavor.name()),
        lines: vec![format!("  {list}")],
        data: json!({ "daemon": flavor.name(), "command": command, "per_command": calls }),
    }
}
