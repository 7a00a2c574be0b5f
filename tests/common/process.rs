//! Running the daemon binaries with any command line: output captured to files, waits
//! bounded by deadlines, and the process killed by its PID when the test lets go.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use super::{poll_until, read_for_diagnostics};

/// vtpm's daemon binary (named like swtpm's).
pub fn vtpm_swtpm() -> PathBuf {
    env!("CARGO_BIN_EXE_swtpm").into()
}

/// Debian's swtpm, the reference for differential tests.
pub fn debian_swtpm() -> PathBuf {
    let path = PathBuf::from("/usr/bin/swtpm");
    assert!(
        path.exists(),
        "/usr/bin/swtpm is missing: install Debian's swtpm (apt-get install swtpm)"
    );
    path
}

pub struct Process {
    pub child: Child,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

/// Output of a command that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Process {
    /// Starts `program args...` with stdout/stderr going to files in `dir`.
    pub fn start(program: &Path, args: &[&str], dir: &Path) -> Process {
        Process::start_with(Command::new(program).args(args), dir)
    }

    /// Starts a prepared command (for environment or working directory), output to files
    /// in `dir`.
    pub fn start_with(command: &mut Command, dir: &Path) -> Process {
        Process::start_with_stdin(command, Stdio::null(), dir)
    }

    /// Like [`Process::start_with`], with `stdin` as the process's standard input (a
    /// pipe end, say, that a shell wrapper moves to another descriptor number).
    pub fn start_with_stdin(command: &mut Command, stdin: Stdio, dir: &Path) -> Process {
        Process::spawn(command, stdin, dir, &[])
    }

    /// Starts a prepared command that inherits `fds` under their numbers in this process
    /// (for `--fd N`, `--pid fd=N`, `--log fd=N`, ...).
    pub fn start_inheriting(command: &mut Command, dir: &Path, fds: &[BorrowedFd<'_>]) -> Process {
        Process::spawn(command, Stdio::null(), dir, fds)
    }

    /// Everything the test process opens is close-on-exec; the flag is cleared on
    /// `inherited` only while this child is spawned, and spawns are serialized, so those
    /// fds reach this child and no other test's child.
    fn spawn(
        command: &mut Command,
        stdin: Stdio,
        dir: &Path,
        inherited: &[BorrowedFd<'_>],
    ) -> Process {
        static SPAWN: Mutex<()> = Mutex::new(());
        let _one_spawn_at_a_time = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        let set_cloexec = |on: bool| {
            let flags = if on {
                FdFlag::FD_CLOEXEC
            } else {
                FdFlag::empty()
            };
            for fd in inherited {
                fcntl(fd, FcntlArg::F_SETFD(flags)).expect("set FD_CLOEXEC");
            }
        };
        set_cloexec(false);
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stdout_path = dir.join(format!("stdout.{n}"));
        let stderr_path = dir.join(format!("stderr.{n}"));
        let child = command
            .stdin(stdin)
            .stdout(File::create(&stdout_path).unwrap())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
        set_cloexec(true);
        Process {
            child,
            stdout_path,
            stderr_path,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        read_for_diagnostics(&self.stderr_path)
    }

    pub fn stdout(&self) -> String {
        read_for_diagnostics(&self.stdout_path)
    }

    /// Exit status if the process has ended (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let pid = self.pid();
        poll_until(deadline, &format!("process {pid} to exit"), || {
            self.try_status()
        })
    }

    /// Runs to completion and returns status and output.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let status = self.wait_exit(timeout);
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// Waits until `path` accepts UNIX connections, failing fast if the process exits.
    pub fn wait_unix_socket(&mut self, path: &Path) {
        drop(self.connect_unix(path));
    }

    /// Waits until TCP `port` on 127.0.0.1 accepts connections.
    pub fn wait_tcp_port(&mut self, port: u16) {
        drop(self.connect_tcp(port));
    }

    /// Connects to the UNIX socket at `path` as soon as it accepts, failing fast if the
    /// process exits, and keeps the connection: where a client hanging up ends the
    /// daemon (`-t`, `--ctrl ...,terminate`), a probe connection would.
    pub fn connect_unix(&mut self, path: &Path) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(10);
        poll_until(deadline, &format!("socket {}", path.display()), || {
            self.panic_if_exited();
            UnixStream::connect(path).ok()
        })
    }

    /// Connects to TCP `port` on 127.0.0.1 as soon as it accepts (see `connect_unix`).
    pub fn connect_tcp(&mut self, port: u16) -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(10);
        poll_until(deadline, &format!("TCP port {port}"), || {
            self.panic_if_exited();
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
    }

    fn panic_if_exited(&mut self) {
        if let Some(status) = self.try_status() {
            panic!(
                "daemon exited early with {status}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Sends a signal to this process (by its PID).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("kill");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP port that was free a moment ago (the kernel picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two ports `p` and `p + 1` that were free a moment ago (tpm2-tools' swtpm TCTI uses
/// the data port and the next one for control).
pub fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
