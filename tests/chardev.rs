//! `swtpm chardev`: a character device, an inherited descriptor (`--fd`, here one end
//! of a socketpair) or a Linux vTPM proxy device as the data channel, next to a UNIX
//! control channel. Debian's swtpm 0.7.1 runs the same command lines where it can.

#[allow(dead_code)]
mod common;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ctrl::{CtrlClient, INIT, be};
use common::data::DataClient;
use common::process::{Finished, Process, debian_swtpm, vtpm_swtpm};
use common::tpm2::{self, StartupType, Tpm2};

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const VTPMX: &str = "/dev/vtpmx";

fn run(program: &Path, args: &[&str]) -> Finished {
    let dir = common::short_tempdir();
    Process::start(program, args, dir.path()).finish(EXIT_TIMEOUT)
}

fn state_dir(tmp: &tempfile::TempDir) -> (PathBuf, String) {
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let arg = format!("dir={}", state.display());
    (state, arg)
}

/// `chardev --fd N` with one end of a socketpair: INIT on the control channel, TPM
/// commands over the pair, and the daemon ends (status 0) when the other end closes.
#[test]
fn socketpair_as_the_device() {
    for program in [vtpm_swtpm(), debian_swtpm()] {
        let what = program.display().to_string();
        let tmp = common::short_tempdir();
        let (_, tpmstate) = state_dir(&tmp);
        let ctrl_path = tmp.path().join("ctrl");
        let ctrl_arg = format!("type=unixio,path={}", ctrl_path.display());
        let (ours, theirs) = UnixStream::pair().unwrap();
        let theirs = OwnedFd::from(theirs);
        let fd = theirs.as_raw_fd().to_string();
        let args = [
            "chardev",
            "--fd",
            &fd,
            "--tpm2",
            "--tpmstate",
            &tpmstate,
            "--ctrl",
            &ctrl_arg,
        ];
        let mut daemon = Process::start_inheriting(
            Command::new(&program).args(args),
            tmp.path(),
            &[theirs.as_fd()],
        );
        drop(theirs);
        let mut ctrl = CtrlClient::from_unix_stream(daemon.connect_unix(&ctrl_path));
        assert_eq!(ctrl.request(INIT, &be(&[0])).rc, 0, "{what}: INIT");
        let mut data = DataClient::unix(ours);
        data.startup(StartupType::Clear).unwrap();
        assert_eq!(data.get_random(16).unwrap().len(), 16, "{what}");
        drop(data);
        let status = daemon.wait_exit(EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{what}: {}", daemon.stderr());
        assert!(!ctrl_path.exists(), "{what}: control socket removed");
    }
}

#[test]
fn dev_null_reads_eof_and_ends() {
    let tmp = common::short_tempdir();
    let (_, tpmstate) = state_dir(&tmp);
    for program in [vtpm_swtpm(), debian_swtpm()] {
        let out = run(
            &program,
            &[
                "chardev",
                "-c",
                "/dev/null",
                "--tpm2",
                "--tpmstate",
                &tpmstate,
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {out:#?}",
            program.display()
        );
    }
}

#[test]
fn device_errors() {
    let tmp = common::short_tempdir();
    let missing = tmp.path().join("missing");
    let missing_arg = missing.display().to_string();
    let cases: &[(&[&str], String)] = &[
        (
            &["chardev", "-c", &missing_arg],
            format!("swtpm: Cannot open {missing_arg}: No such file or directory"),
        ),
        (
            &["chardev", "--tpm2"],
            "swtpm: Error: Missing character device or file descriptor".into(),
        ),
        (
            &["chardev", "-c", "/dev/null", "--vtpm-proxy"],
            "swtpm: Cannot use vTPM proxy with a provided device.".into(),
        ),
    ];
    for (args, message) in cases {
        for program in [vtpm_swtpm(), debian_swtpm()] {
            let out = run(&program, args);
            assert_eq!(out.status.code(), Some(1), "{} {args:?}", program.display());
            assert!(
                out.stderr.starts_with(message.as_str()),
                "{} {args:?}: expected {message:?}: {out:#?}",
                program.display()
            );
        }
    }
}

/// `--vtpm-proxy` creates `/dev/tpm<N>` through the kernel's vTPM proxy driver and
/// serves it: the daemon starts the TPM itself, and a TPM command written to the new
/// device is answered. Without the driver only the error is checked.
#[test]
fn vtpm_proxy() {
    let tmp = common::short_tempdir();
    let (_, tpmstate) = state_dir(&tmp);
    if !Path::new(VTPMX).exists() {
        let out = run(
            &vtpm_swtpm(),
            &["chardev", "--vtpm-proxy", "--tpm2", "--tpmstate", &tpmstate],
        );
        assert_eq!(out.status.code(), Some(1), "{out:#?}");
        assert!(
            out.stderr
                .starts_with("swtpm: Could not open /dev/vtpmx: No such file or directory"),
            "{out:#?}"
        );
        eprintln!(
            "vtpm_proxy: checked the error only; the proxy test itself is skipped because \
             {VTPMX} is absent (load the tpm_vtpm_proxy kernel module to run it)"
        );
        return;
    }

    let mut daemon = Process::start(
        &vtpm_swtpm(),
        &["chardev", "--vtpm-proxy", "--tpm2", "--tpmstate", &tpmstate],
        tmp.path(),
    );
    let device = common::poll_until(
        Instant::now() + EXIT_TIMEOUT,
        "the 'New TPM device' line",
        || {
            if let Some(status) = daemon.try_status() {
                panic!("daemon ended with {status}: {}", daemon.stderr());
            }
            new_device_path(&daemon.stdout())
        },
    );
    let mut tpm = common::poll_until(Instant::now() + EXIT_TIMEOUT, "the device to open", || {
        OpenOptions::new().read(true).write(true).open(&device).ok()
    });
    tpm.write_all(&tpm2::get_random(8)).unwrap();
    let mut response = vec![0u8; 4096];
    let n = tpm.read(&mut response).unwrap();
    response.truncate(n);
    assert_eq!(
        tpm2::parse_get_random(&response).unwrap().len(),
        8,
        "{device:?}"
    );
    drop(tpm);

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(EXIT_TIMEOUT).code(), Some(0));
    common::poll_until(Instant::now() + EXIT_TIMEOUT, "the device to go", || {
        (!device.exists()).then_some(())
    });
}

/// `/dev/tpmN` from `New TPM device: /dev/tpmN (major/minor = A/B)`.
fn new_device_path(stdout: &str) -> Option<PathBuf> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("New TPM device: "))?;
    let path = line["New TPM device: ".len()..].split(' ').next()?;
    Some(PathBuf::from(path))
}
