//! vtpm next to Debian's swtpm 0.7.1 (`/usr/bin/swtpm`): the side-by-side benchmark.
//!
//! ```text
//! cargo bench --bench vtpm_vs_swtpm                 # full run, about a minute on 2 cores
//! cargo bench --bench vtpm_vs_swtpm -- --smoke      # every path briefly, seconds
//! cargo bench --bench vtpm_vs_swtpm -- --only startup,unix,tcp   # rerun some sections
//! ```
//!
//! Options: `--smoke`, `--only <sections>` (startup, unix, tcp, migration, density,
//! instructions, syscalls), `--json <path>` (default `target/bench/vtpm_vs_swtpm-<mode>.json`).
//! `VTPM_BENCH_DIR` chooses where the state directories live (default `/tmp`): the
//! durable-write figures are those of that filesystem, which the output names.
//! `VTPM_BENCH_BINARY` runs another vtpm binary in vtpm's place (a candidate build).
//!
//! Both daemons get the same command line (`socket --tpm2 --tpmstate dir=…
//! --ctrl type=unixio,path=… --server type=unixio,path=…|type=tcp,port=…`), a fresh
//! state directory each (empty, or a copy of one state manufactured at the beginning by
//! swtpm, so that both have the same seeds), and are driven over real sockets as QEMU
//! drives them. Runs alternate A B, B A; the client stays on CPU 0 and every daemon runs
//! on CPU 1 (small commands are measured a second time with the client on CPU 1 too).
//! Timing sections report medians (and p99) next to references that are not daemons
//! (a minimal process, an echo server, a bare write + fdatasync); counting sections
//! (callgrind, strace) do not depend on the machine's load. Each section reports how
//! busy the rest of the machine was. The table shows vtpm, swtpm and the ratio
//! vtpm/swtpm; then every goal of the issue with PASS/FAIL, the profiles, and the path
//! of the JSON file with everything. Needs valgrind and strace; under valgrind, which
//! cannot run the seccomp call, daemons run without their filter (`--seccomp
//! action=none`, which both have). No daemon outlives the benchmark, also when it
//! panics.

mod common;
mod context;
mod counting;
mod daemon;
mod density;
mod echo;
mod machine;
mod migration;
mod nvwrite;
mod primary;
mod report;
mod small;
mod startup;
mod stats;
mod tools;
mod wire;
mod workload;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::json;

use context::{Bench, Plan};
use machine::{CpuTimes, Filesystem, Pinning, load_average};

/// A part of the benchmark: its name for `--only`, and what it runs.
type Section = (&'static str, fn(&mut Bench));

/// The sections in the order they run.
const SECTIONS: [Section; 7] = [
    ("startup", startup::run),
    ("unix", workload::unix),
    ("tcp", workload::tcp),
    ("migration", migration::run),
    ("density", density::run),
    ("instructions", counting::instructions),
    ("syscalls", counting::syscalls),
];

/// Sections whose results are counts, not times: the machine's load does not matter.
const COUNTING: [&str; 2] = ["instructions", "syscalls"];
/// CPUs used by other processes (or stolen) above which timings are suspect.
const BUSY: f64 = 0.25;

struct Options {
    smoke: bool,
    only: Option<Vec<String>>,
    json: Option<PathBuf>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            smoke: false,
            only: None,
            json: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--smoke" => options.smoke = true,
                "--only" => {
                    let list = args.next().expect("--only needs a list of sections");
                    let names: Vec<String> = list.split(',').map(str::to_string).collect();
                    for name in &names {
                        assert!(
                            SECTIONS.iter().any(|(known, _)| known == name),
                            "unknown section {name}; known: {}",
                            SECTIONS.map(|(n, _)| n).join(", ")
                        );
                    }
                    options.only = Some(names);
                }
                "--json" => options.json = Some(args.next().expect("--json needs a path").into()),
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                other => panic!("unknown option {other}; see tests/bench/vtpm_vs_swtpm.rs"),
            }
        }
        options
    }

    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|name| name == section))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(startup::ANSWER_ONCE) {
        let socket = args.next().expect("--answer-once needs a socket path");
        return startup::answer_once(socket.as_ref());
    }
    let options = Options::parse();
    daemon::install_panic_cleanup();
    let started = Instant::now();
    let load_at_start = load_average();
    let pinning = Pinning::set_up();
    let plan = if options.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    let mut bench = Bench::new(plan, pinning);
    let machine = machine_facts(&bench, load_at_start);
    for (key, value) in machine.as_object().into_iter().flatten() {
        println!(
            "{key}: {}",
            value.as_str().map_or(value.to_string(), str::to_string)
        );
    }

    let mut section_loads = Vec::new();
    let mut busy_sections = Vec::new();
    for (name, run) in SECTIONS {
        if !options.wants(name) {
            continue;
        }
        let before = load_average()[0];
        let cpu_before = CpuTimes::now();
        let section_started = Instant::now();
        run(&mut bench);
        let wall = section_started.elapsed();
        let other = CpuTimes::now().others_since(&cpu_before, wall);
        if other.others + other.steal > BUSY && !COUNTING.contains(&name) {
            busy_sections.push(name);
        }
        section_loads.push(format!(
            "{name}: {:.1} s; others kept {:.2} CPUs busy, steal {:.2}; stalled on CPU {:.0}%, \
             on I/O {:.0}% of the time; 1-min load {before:.2} -> {:.2}",
            wall.as_secs_f64(),
            other.others,
            other.steal,
            other.cpu_stall * 100.0,
            other.io_stall * 100.0,
            load_average()[0]
        ));
    }

    let report = &bench.report;
    println!("\n==== vtpm vs swtpm ({}) ====", mode(&options));
    println!("{}", report.table());
    println!("\n==== goals (ratios vtpm/swtpm unless stated) ====");
    println!("{}", report.goals_text());
    if !report.profiles.is_empty() {
        println!("\n==== profiles ====");
        println!("{}", report.profiles_text());
    }
    println!("\n==== notes ====");
    for note in &report.notes {
        println!("{note}");
    }
    let load_at_end = load_average();
    println!("sections (the load average includes the benchmark's own client and daemons):");
    for line in &section_loads {
        println!("  {line}");
    }
    if !busy_sections.is_empty() {
        println!(
            "the machine was busy (> {BUSY} CPUs used by others) during timing sections; \
             rerun when it is quiet: cargo bench --bench vtpm_vs_swtpm -- --only {}",
            busy_sections.join(",")
        );
    }
    println!(
        "load average at start {:.2} {:.2} {:.2}, at end {:.2} {:.2} {:.2}; {:.0} s in all",
        load_at_start[0],
        load_at_start[1],
        load_at_start[2],
        load_at_end[0],
        load_at_end[1],
        load_at_end[2],
        started.elapsed().as_secs_f64()
    );

    let mut json = report.json(machine);
    json["mode"] = json!(mode(&options));
    json["sections"] = json!(section_loads);
    json["busy_timing_sections"] = json!(busy_sections);
    json["load_average_at_end"] = json!(load_at_end);
    json["seconds"] = json!(started.elapsed().as_secs_f64());
    let path = options.json.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench")
            .join(format!("vtpm_vs_swtpm-{}.json", mode(&options)))
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the JSON directory");
    }
    let text = serde_json::to_string_pretty(&json).expect("serialize the results");
    std::fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    println!("JSON: {}", path.display());
}

fn mode(options: &Options) -> &'static str {
    if options.smoke { "smoke" } else { "full" }
}

/// What the numbers depend on, printed first and stored in the JSON.
fn machine_facts(bench: &Bench, load: [f64; 3]) -> serde_json::Value {
    json!({
        "machine": machine::describe_cpu(),
        "load_average_at_start": format!("{:.2} {:.2} {:.2}", load[0], load[1], load[2]),
        "pinning": bench.pinning.describe(),
        "state_filesystem": Filesystem::of(bench.root()).describe(),
        "state_directory": bench.root().display().to_string(),
        "vtpm": format!("{} ({})", daemon::Flavor::Vtpm.program().display(), git_revision()),
        "swtpm": first_line("/usr/bin/swtpm", &["--version"]),
        "libtpms": first_line("dpkg-query", &["-W", "-f", "${Package} ${Version}", "libtpms0"]),
    })
}

fn git_revision() -> String {
    first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ],
    )
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("({program} unavailable)"))
}
