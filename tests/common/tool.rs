//! Running the client tools — vtpm's `swtpm_ioctl`/`swtpm_bios` and Debian's — as a user
//! does: a command line, optional standard input, output captured, a bounded wait.
//! Both are started with the same `argv[0]` so that messages that quote it compare.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::read_for_diagnostics;

/// Environment variables the tools read; unset unless a test sets them.
const TOOL_ENVIRONMENT: &[&str] = &[
    "TPM_DEVICE",
    "TCSD_USE_TCP_DEVICE",
    "TCSD_TCP_DEVICE_HOSTNAME",
    "TCSD_TCP_DEVICE_PORT",
    "SWTPM_IOCTL_BUFFERSIZE",
];
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// One of the two implementations of a tool.
#[derive(Clone, Debug)]
pub struct Tool {
    pub program: PathBuf,
    /// `argv[0]`, e.g. `swtpm_ioctl`.
    pub name: &'static str,
    pub label: &'static str,
}

impl Tool {
    pub fn vtpm_ioctl() -> Tool {
        Tool {
            program: env!("CARGO_BIN_EXE_swtpm_ioctl").into(),
            name: "swtpm_ioctl",
            label: "vtpm swtpm_ioctl",
        }
    }

    pub fn debian_ioctl() -> Tool {
        Tool::debian("swtpm_ioctl", "Debian swtpm_ioctl")
    }

    pub fn vtpm_bios() -> Tool {
        Tool {
            program: env!("CARGO_BIN_EXE_swtpm_bios").into(),
            name: "swtpm_bios",
            label: "vtpm swtpm_bios",
        }
    }

    pub fn debian_bios() -> Tool {
        Tool::debian("swtpm_bios", "Debian swtpm_bios")
    }

    fn debian(name: &'static str, label: &'static str) -> Tool {
        let program = PathBuf::from("/usr/bin").join(name);
        assert!(
            program.exists(),
            "{} is missing: install Debian's swtpm-tools (apt-get install swtpm-tools)",
            program.display()
        );
        Tool {
            program,
            name,
            label,
        }
    }

    /// Runs the tool with `args`; output files go to `dir`.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S], dir: &Path) -> ToolRun {
        self.run_with(args, &Options::default(), dir)
    }

    pub fn run_with<S: AsRef<OsStr>>(&self, args: &[S], options: &Options, dir: &Path) -> ToolRun {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stdout_path = dir.join(format!("tool-out.{n}"));
        let stderr_path = dir.join(format!("tool-err.{n}"));
        let stdin = match &options.stdin {
            Some(bytes) => {
                let path = dir.join(format!("tool-in.{n}"));
                std::fs::write(&path, bytes).unwrap();
                Stdio::from(File::open(&path).unwrap())
            }
            None => Stdio::null(),
        };
        let mut command = Command::new(&self.program);
        command.arg0(self.name).args(args);
        for name in TOOL_ENVIRONMENT {
            command.env_remove(name);
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let mut child = command
            .stdin(stdin)
            .stdout(File::create(&stdout_path).unwrap())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", self.program.display()));
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let status: ExitStatus = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                // Our own child, not yet reaped: its PID is still ours to signal.
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} {:?} did not finish within {TOOL_TIMEOUT:?}",
                    self.label, command
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        ToolRun {
            status,
            stdout: read_for_diagnostics(&stdout_path),
            stderr: read_for_diagnostics(&stderr_path),
        }
    }
}

/// Extra settings for one run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(String, OsString)>,
}

/// What a tool did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts exit code, stdout and stderr.
    pub fn expect(&self, code: i32, stdout: &str, stderr: &str) {
        assert_eq!(
            (self.code(), self.stdout.as_str(), self.stderr.as_str()),
            (Some(code), stdout, stderr),
            "unexpected result: {self:?}"
        );
    }
}
