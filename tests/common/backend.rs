//! Spawns a TPM backend daemon speaking swtpm's control protocol: vtpm's own binary
//! (named `swtpm`) or Debian's swtpm, interchangeably.
//!
//! While vtpm's daemon is being written its binary is a stub, so the backend used as
//! "vtpm" can be overridden with `VTPM_TEST_SWTPM=/usr/bin/swtpm` to validate the harness
//! and the tests against the reference implementation.

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{poll_until, read_for_diagnostics};

/// Environment variable that replaces vtpm's binary in `Backend::vtpm()`.
pub const VTPM_OVERRIDE_ENV: &str = "VTPM_TEST_SWTPM";
const DEBIAN_SWTPM: &str = "/usr/bin/swtpm";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A backend program and a name for it in messages.
#[derive(Clone, Debug)]
pub struct Backend {
    program: PathBuf,
    name: String,
}

impl Backend {
    /// vtpm's daemon, the implementation under test, unless `VTPM_TEST_SWTPM` names
    /// another binary.
    pub fn vtpm() -> Backend {
        match std::env::var_os(VTPM_OVERRIDE_ENV) {
            Some(program) if !program.is_empty() => Backend {
                name: format!(
                    "vtpm-slot backend {} (from {VTPM_OVERRIDE_ENV})",
                    Path::new(&program).display()
                ),
                program: program.into(),
            },
            _ => Backend {
                program: env!("CARGO_BIN_EXE_swtpm").into(),
                name: "vtpm".to_string(),
            },
        }
    }

    /// Debian's swtpm, the reference peer for interoperability tests.
    pub fn debian_swtpm() -> Backend {
        assert!(
            Path::new(DEBIAN_SWTPM).exists(),
            "{DEBIAN_SWTPM} is missing: install Debian's swtpm (apt-get install swtpm)"
        );
        Backend {
            program: DEBIAN_SWTPM.into(),
            name: "Debian swtpm".to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `<program> socket --tpmstate dir=… --ctrl type=unixio,path=… --tpm2
    /// --log file=… <extra_args>` and waits until the control socket accepts a
    /// connection.
    pub fn spawn(&self, paths: &BackendPaths, extra_args: &[&str]) -> RunningBackend {
        fs::create_dir_all(&paths.state_dir).expect("create backend state dir");
        let stderr = File::create(&paths.stderr_file).expect("create backend stderr file");
        let mut command = Command::new(&self.program);
        command
            .arg("socket")
            .arg("--tpmstate")
            .arg(format!("dir={}", paths.state_dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", paths.ctrl_socket.display()))
            .arg("--tpm2")
            .arg("--log")
            .arg(format!("file={}", paths.log_file.display()))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {} ({:?}): {err}", self.name, self.program));
        let mut backend = RunningBackend {
            child,
            name: self.name.clone(),
            paths: paths.clone(),
            exited: None,
        };
        backend.wait_ready();
        backend
    }
}

/// Where a backend keeps its state, its control socket and its logs. The logs live
/// outside the state dir: tests check that the state dir holds only the TPM's files.
#[derive(Clone, Debug)]
pub struct BackendPaths {
    pub state_dir: PathBuf,
    pub ctrl_socket: PathBuf,
    pub log_file: PathBuf,
    pub stderr_file: PathBuf,
}

impl BackendPaths {
    /// State in `state_dir`; socket and logs in `run_dir` (which must exist).
    pub fn new(state_dir: &Path, run_dir: &Path) -> BackendPaths {
        BackendPaths {
            state_dir: state_dir.to_path_buf(),
            ctrl_socket: run_dir.join("ctrl.sock"),
            log_file: run_dir.join("backend.log"),
            stderr_file: run_dir.join("backend.stderr"),
        }
    }
}

/// A live backend process. Dropping it kills it (by its PID) if it is still running.
pub struct RunningBackend {
    child: Child,
    name: String,
    paths: BackendPaths,
    exited: Option<ExitStatus>,
}

impl RunningBackend {
    pub fn ctrl_socket(&self) -> &Path {
        &self.paths.ctrl_socket
    }

    /// Waits for the process to exit by itself (e.g. after QEMU's CMD_SHUTDOWN).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let what = format!("{} to exit", self.name);
        let status = poll_until(deadline, &what, || self.child.try_wait().expect("try_wait"));
        self.exited = Some(status);
        status
    }

    /// The daemon's stderr and log file, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "{} stderr:\n{}\n{} log:\n{}",
            self.name,
            read_for_diagnostics(&self.paths.stderr_file),
            self.name,
            read_for_diagnostics(&self.paths.log_file)
        )
    }

    /// Polls `connect()` on the control socket; fails fast if the process exits.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let what = format!(
            "{} control socket {}",
            self.name,
            self.ctrl_socket().display()
        );
        poll_until(deadline, &what, || {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                panic!(
                    "{} exited during start-up with {status} \
                     ({VTPM_OVERRIDE_ENV}=/usr/bin/swtpm runs the vtpm tests on swtpm)\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            // The probe connection is closed at once; swtpm tolerates that.
            UnixStream::connect(&self.paths.ctrl_socket).ok()
        });
    }
}

impl Drop for RunningBackend {
    fn drop(&mut self) {
        if self.exited.is_none() && self.child.try_wait().ok().flatten().is_none() {
            // `Child::kill` signals exactly this PID, which is still ours: we have not
            // reaped it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
