//! libtpms is opened at run time, after the control socket answers: what needs no TPM is
//! answered before it is loaded, and a missing or broken libtpms still ends the daemon
//! with an error that names the library and the package to install.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::ctrl::{CtrlClient, GET_CAPABILITY, INIT, SHUTDOWN, be};
use common::process::{Process, vtpm_swtpm};

/// A directory whose `libtpms.so.0` is not a library: first on the loader's search path,
/// it makes opening libtpms fail as a missing or damaged installation would.
fn broken_library_dir(dir: &Path) -> String {
    let libs = dir.join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    std::fs::write(libs.join("libtpms.so.0"), b"not a library").unwrap();
    libs.display().to_string()
}

fn names_library_and_package(stderr: &str) {
    assert!(
        stderr.contains("could not load libtpms (libtpms.so.0)")
            && stderr.contains("apt-get install libtpms0"),
        "{stderr}"
    );
}

#[test]
fn a_broken_libtpms_ends_the_daemon_with_a_clear_error() {
    let dir = common::short_tempdir();
    let ctrl = dir.path().join("ctrl");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mut command = Command::new(vtpm_swtpm());
    command
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", ctrl.display()))
        .env("LD_LIBRARY_PATH", broken_library_dir(dir.path()));
    let finished = Process::start_with(&mut command, dir.path()).finish(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    names_library_and_package(&finished.stderr);
    assert!(
        !ctrl.exists(),
        "the control socket is removed on the way out"
    );
}

#[test]
fn print_capabilities_needs_libtpms_and_says_so() {
    let dir = common::short_tempdir();
    let mut command = Command::new(vtpm_swtpm());
    command
        .args(["socket", "--tpm2", "--print-capabilities"])
        .env("LD_LIBRARY_PATH", broken_library_dir(dir.path()));
    let finished = Process::start_with(&mut command, dir.path()).finish(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    names_library_and_package(&finished.stderr);
}

#[test]
fn control_commands_that_need_no_tpm_are_answered_and_init_waits_for_libtpms() {
    let dir = common::short_tempdir();
    let ctrl = dir.path().join("ctrl");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let state_arg = format!("dir={}", state.display());
    let ctrl_arg = format!("type=unixio,path={}", ctrl.display());
    let mut process = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--tpmstate",
            &state_arg,
            "--ctrl",
            &ctrl_arg,
        ],
        dir.path(),
    );
    process.wait_unix_socket(&ctrl);
    let mut client = CtrlClient::unix(&ctrl);
    // Sent at once: INIT finds libtpms loaded or waits for it, never fails for it.
    assert_eq!(client.request(GET_CAPABILITY, &[]).rc, 0);
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    assert_eq!(client.request(SHUTDOWN, &[]).rc, 0);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
}
