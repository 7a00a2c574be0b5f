//! What the benchmark cannot guard: the system calls one TPM command costs on an
//! established data connection, counted with `strace -f -c` attached to a running
//! daemon (all its threads) for N commands only: after INIT, TPM2_Startup and any setup,
//! and detached before the daemon is shut down.
//!
//! * A small command, one every few ms (longer than the polling window, so the daemon
//!   blocks between commands): exactly one `read` and one `write`.
//! * Small commands back to back: the daemon polls for the next one (non-blocking
//!   `recvfrom` and `sched_yield` while nothing is there: bounded), and still receives
//!   each command once and answers it with one `write`.
//! * TPM2_NV_Write, which changes the stored state: exactly one flush (`fsync` or
//!   `fdatasync`) and a handful of other calls.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::ctrl::{CtrlClient, INIT, SHUTDOWN, be};
use common::data::DataClient;
use common::process::{Process, vtpm_swtpm};
use common::tpm2::{NV_OWNER_RW_NO_DA, StartupType, Tpm2};

const N: usize = 50;
const NV_INDEX: u32 = 0x0150_0030;
/// Longer than the daemon's largest polling window (50 µs), even under strace.
const PAUSE: Duration = Duration::from_millis(3);
/// Polling's non-blocking reads that found nothing, and yields, per command at most.
/// strace stops the daemon at every call, so few fit in one 50 µs window.
const MAX_POLLING_CALLS: f64 = 10.0;

/// Calls and failed calls of one system call.
#[derive(Clone, Copy, Debug, Default)]
struct Count {
    calls: i64,
    errors: i64,
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The rows of an `strace -c` summary ("% time seconds usecs/call calls errors syscall",
/// errors blank when there were none).
fn parse_summary(path: &Path) -> BTreeMap<String, Count> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(calls)) = (fields.last(), fields.get(3)) else {
            continue;
        };
        let Ok(calls) = calls.parse::<i64>() else {
            continue;
        };
        if *name == "total" {
            continue;
        }
        let errors = match fields.len() {
            6 => fields[4].parse().unwrap_or(0),
            _ => 0,
        };
        counts.insert(name.to_string(), Count { calls, errors });
    }
    counts
}

/// Starts vtpm, INIT, connects, TPM2_Startup, runs `setup`; then, with `strace -f -c`
/// attached, `command` N times; returns the calls per command of each system call
/// (calls, failed calls).
fn per_command(
    setup: &dyn Fn(&mut DataClient),
    command: &dyn Fn(&mut DataClient, usize),
) -> BTreeMap<String, (f64, f64)> {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let (ctrl, data, summary) = (
        dir.path().join("ctrl"),
        dir.path().join("data"),
        dir.path().join("strace.txt"),
    );
    let state_arg = format!("dir={}", state.display());
    let ctrl_arg = format!("type=unixio,path={}", ctrl.display());
    let data_arg = format!("type=unixio,path={}", data.display());
    let mut daemon = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--tpmstate",
            &state_arg,
            "--ctrl",
            &ctrl_arg,
            "--server",
            &data_arg,
        ],
        dir.path(),
    );
    daemon.wait_unix_socket(&ctrl);
    let mut control = CtrlClient::unix(&ctrl);
    assert_eq!(control.request(INIT, &be(&[0])).rc, 0, "INIT");
    let mut client = DataClient::unix(daemon.connect_unix(&data));
    client.startup(StartupType::Clear).unwrap();
    setup(&mut client);

    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .args(["-p", &daemon.pid().to_string()]);
    let mut tracer = Process::start_with(&mut strace, dir.path());
    // "Process N attached with 2 threads": the data thread and the main thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    common::poll_until(deadline, "strace to attach", || {
        tracer.stderr().contains(" attached").then_some(())
    });
    for n in 0..N {
        command(&mut client, n);
    }
    tracer.signal(Signal::SIGINT);
    tracer.wait_exit(Duration::from_secs(10));

    assert_eq!(control.request(SHUTDOWN, &[]).rc, 0, "SHUTDOWN");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
    parse_summary(&summary)
        .into_iter()
        .map(|(name, count)| {
            let per = |value: i64| value as f64 / N as f64;
            (name, (per(count.calls), per(count.errors)))
        })
        .collect()
}

fn calls(counts: &BTreeMap<String, (f64, f64)>, name: &str) -> f64 {
    counts.get(name).map_or(0.0, |(calls, _)| *calls)
}

fn errors(counts: &BTreeMap<String, (f64, f64)>, name: &str) -> f64 {
    counts.get(name).map_or(0.0, |(_, errors)| *errors)
}

fn total(counts: &BTreeMap<String, (f64, f64)>) -> f64 {
    counts.values().map(|(calls, _)| calls).sum()
}

fn no_setup(_: &mut DataClient) {}

#[test]
fn a_small_command_costs_one_read_and_one_write() {
    if !strace_available() {
        eprintln!("SKIPPED: strace is not installed (packaging/install-deps test installs it)");
        return;
    }
    let counts = per_command(&no_setup, &|client, _| {
        assert_eq!(client.get_random(16).unwrap().len(), 16);
        std::thread::sleep(PAUSE);
    });
    eprintln!("TPM2_GetRandom, one every {PAUSE:?}: system calls per command {counts:?}");
    assert_eq!(calls(&counts, "read"), 1.0, "{counts:?}");
    assert_eq!(calls(&counts, "write"), 1.0, "{counts:?}");
    assert_eq!(total(&counts), 2.0, "nothing else: {counts:?}");
}

#[test]
fn back_to_back_commands_are_polled_for_within_bounds() {
    if !strace_available() {
        eprintln!("SKIPPED: strace is not installed (packaging/install-deps test installs it)");
        return;
    }
    let counts = per_command(&no_setup, &|client, _| {
        assert_eq!(client.get_random(16).unwrap().len(), 16);
    });
    eprintln!("TPM2_GetRandom back to back: system calls per command {counts:?}");
    let received =
        calls(&counts, "read") + calls(&counts, "recvfrom") - errors(&counts, "recvfrom");
    assert!(
        (received - 1.0).abs() < 1e-9,
        "each command is received once: {counts:?}"
    );
    assert_eq!(calls(&counts, "write"), 1.0, "{counts:?}");
    let polling = errors(&counts, "recvfrom") + calls(&counts, "sched_yield");
    assert!(
        polling <= MAX_POLLING_CALLS,
        "polling made {polling} calls per command: {counts:?}"
    );
    let other = total(&counts) - 2.0 - polling;
    assert!(other.abs() < 1e-9, "nothing else: {counts:?}");
}

#[test]
fn nv_write_costs_one_flush() {
    if !strace_available() {
        eprintln!("SKIPPED: strace is not installed (packaging/install-deps test installs it)");
        return;
    }
    let define = |client: &mut DataClient| {
        client
            .nv_define_space(NV_INDEX, 32, NV_OWNER_RW_NO_DA)
            .unwrap();
    };
    let counts = per_command(&define, &|client, n| {
        // New data every time: libtpms stores an NV index only when its data changes.
        client.nv_write(NV_INDEX, 0, &[n as u8; 32]).unwrap();
        std::thread::sleep(PAUSE);
    });
    eprintln!("TPM2_NV_Write, one every {PAUSE:?}: system calls per command {counts:?}");
    let flushes = calls(&counts, "fsync") + calls(&counts, "fdatasync");
    assert_eq!(
        flushes, 1.0,
        "one flush per acknowledged change: {counts:?}"
    );
    // Read the command, open the temporary file, write it, rename it over the state,
    // fsync, close, write the response. A debug build's std also checks that the file's
    // descriptor is open before closing it (fcntl F_GETFD); a release build does not.
    let debug_check = if cfg!(debug_assertions) { 1.0 } else { 0.0 };
    assert_eq!(calls(&counts, "fcntl"), debug_check, "{counts:?}");
    assert_eq!(total(&counts), 7.0 + debug_check, "{counts:?}");
}
