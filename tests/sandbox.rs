//! Least privilege: the seccomp filter is on by default (and every other integration
//! test runs with it), capabilities are gone once the daemon serves, and `--runas` and
//! `--chroot` work as swtpm's.

#[allow(dead_code)]
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::ctrl::{CtrlClient, INIT, SHUTDOWN, be};
use common::process::{Process, vtpm_swtpm};

/// The `Name:\tvalue` line of /proc/<pid>/status.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// vtpm with a control socket at `<dir>/ctrl`, serving; `extra` goes first.
fn serving(dir: &Path, extra: &[&str]) -> Process {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let ctrl = dir.join("ctrl");
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", state.display()),
        "--ctrl".into(),
        format!("type=unixio,path={}", ctrl.display()),
    ]);
    let mut argv = vec!["socket"];
    argv.extend(args.iter().map(String::as_str));
    let mut process = Process::start(&vtpm_swtpm(), &argv, dir);
    process.wait_unix_socket(&ctrl);
    process
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn seccomp_filter_by_default_and_on_request() {
    let dir = common::short_tempdir();
    for (option, expected) in [
        (None, "2"),
        (Some("action=kill"), "2"),
        (Some("action=log"), "2"),
        (Some("action=none"), "0"),
    ] {
        let run = dir
            .path()
            .join(option.unwrap_or("default").replace('=', "-"));
        std::fs::create_dir(&run).unwrap();
        let extra: Vec<&str> = option.map(|o| vec!["--seccomp", o]).unwrap_or_default();
        let process = serving(&run, &extra);
        // The filter goes on once the daemon serves, just after the socket exists.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid = process.pid();
        common::poll_until(deadline, "the seccomp filter", || {
            (status_field(pid, "Seccomp") == expected).then_some(())
        });
        // And the daemon works under it.
        let mut ctrl = CtrlClient::unix(&run.join("ctrl"));
        assert_eq!(ctrl.request(INIT, &be(&[0])).rc, 0, "{option:?}");
    }
}

#[test]
fn unknown_seccomp_action_is_refused() {
    let dir = common::short_tempdir();
    let finished = Process::start(
        &vtpm_swtpm(),
        &["socket", "--tpm2", "--seccomp", "action=trap"],
        dir.path(),
    )
    .finish(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(1));
    assert!(
        finished
            .stderr
            .contains("Unsupported seccomp log action trap"),
        "{}",
        finished.stderr
    );
}

#[test]
fn capabilities_are_dropped_once_serving() {
    // (A daemon running as an ordinary user has none to begin with: see runas_and_chroot.)
    if !is_root() {
        eprintln!("SKIPPED: capabilities are only worth checking for a daemon started as root");
        return;
    }
    let dir = common::short_tempdir();
    let process = serving(dir.path(), &[]);
    let pid = process.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Root keeps CAP_DAC_OVERRIDE (bit 1) and CAP_FOWNER (bit 3), to reach state it
    // does not own; nothing else.
    const FILE_ACCESS_ONLY: &str = "000000000000000a";
    common::poll_until(deadline, "capabilities to be dropped", || {
        (status_field(pid, "CapEff") == FILE_ACCESS_ONLY).then_some(())
    });
    assert_eq!(status_field(pid, "CapPrm"), FILE_ACCESS_ONLY);
    for set in ["CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(status_field(pid, set), "0000000000000000", "{set}");
    }
}

#[test]
fn runas_and_chroot() {
    if !is_root() {
        eprintln!("SKIPPED: --runas and --chroot need a daemon started as root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let dir = common::short_tempdir();
    let jail = dir.path().join("jail");
    std::fs::create_dir_all(jail.join("state")).unwrap();
    for path in [&jail, &jail.join("state")] {
        nix::unistd::chown(path.as_path(), Some(nobody.uid), None).unwrap();
    }
    let jail_arg = jail.display().to_string();
    let mut process = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--runas",
            "nobody",
            "--chroot",
            &jail_arg,
            "--tpmstate",
            "dir=/state",
            "--ctrl",
            "type=unixio,path=/ctrl",
            "--log",
            "file=/log,level=2",
        ],
        dir.path(),
    );
    let ctrl = jail.join("ctrl");
    process.wait_unix_socket(&ctrl);
    assert_eq!(
        status_field(process.pid(), "Uid").split_whitespace().next(),
        Some(nobody.uid.to_string().as_str())
    );
    let root = std::fs::read_link(format!("/proc/{}/root", process.pid())).unwrap();
    assert_eq!(root, jail);
    assert_eq!(
        status_field(process.pid(), "CapEff"),
        "0000000000000000",
        "no capabilities as nobody"
    );
    let mut client = CtrlClient::unix(&ctrl);
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    let permall = std::fs::metadata(jail.join("state/tpm2-00.permall")).unwrap();
    assert_eq!(
        permall.uid(),
        nobody.uid.as_raw(),
        "state written as the --runas user"
    );
    assert_eq!(client.request(SHUTDOWN, &[]).rc, 0);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
    assert!(!ctrl.exists(), "socket removed inside the chroot");
}

#[test]
fn runas_numeric_and_unknown_user() {
    if !is_root() {
        eprintln!("SKIPPED: --runas needs a daemon started as root");
        return;
    }
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let process = serving(dir.path(), &["--runas", "65534"]);
    assert_eq!(
        status_field(process.pid(), "Uid").split_whitespace().next(),
        Some("65534")
    );
    assert_eq!(
        status_field(process.pid(), "Gid").split_whitespace().next(),
        Some("65534")
    );

    let finished = Process::start(
        &vtpm_swtpm(),
        &["socket", "--tpm2", "--runas", "no-such-user-x"],
        dir.path(),
    )
    .finish(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(1));
    assert!(
        finished
            .stderr
            .contains("User 'no-such-user-x' does not exist."),
        "{}",
        finished.stderr
    );
}
