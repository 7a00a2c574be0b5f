//! Starting vtpm's daemon and Debian's swtpm with the same command line, waiting for them
//! with deadlines, and making sure none outlives the benchmark: every daemon's PID is
//! registered, and a panic hook kills whatever is still registered (also when panics
//! abort), besides `Drop`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::ctrl::{self, CtrlClient};
use crate::machine::{Pinning, descendants};
use crate::tools::Tool;
use crate::wire::DataAddress;

/// Replaces the vtpm binary the benchmark runs.
pub const VTPM_BINARY_ENV: &str = "VTPM_BENCH_BINARY";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Vtpm,
    Swtpm,
}

impl Flavor {
    pub const BOTH: [Flavor; 2] = [Flavor::Vtpm, Flavor::Swtpm];

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Vtpm => "vtpm",
            Flavor::Swtpm => "swtpm",
        }
    }

    /// vtpm's release build (cargo bench builds it) — or, to measure a candidate build
    /// (other link options, say), the binary `VTPM_BENCH_BINARY` names — or Debian's swtpm.
    pub fn program(self) -> PathBuf {
        match self {
            Flavor::Vtpm => std::env::var_os(VTPM_BINARY_ENV)
                .filter(|path| !path.is_empty())
                .map_or_else(|| env!("CARGO_BIN_EXE_swtpm").into(), PathBuf::from),
            Flavor::Swtpm => "/usr/bin/swtpm".into(),
        }
    }

    /// Index into per-flavor arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A B in even rounds, B A in odd ones: neither always runs first.
    pub fn in_order(round: usize) -> [Flavor; 2] {
        if round.is_multiple_of(2) {
            [Flavor::Vtpm, Flavor::Swtpm]
        } else {
            [Flavor::Swtpm, Flavor::Vtpm]
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
}

/// How to start one daemon.
pub struct Launch<'a> {
    pub flavor: Flavor,
    pub state_dir: &'a Path,
    /// Sockets and the daemon's stderr go here, not into the state directory.
    pub run_dir: &'a Path,
    pub transport: Transport,
    pub tool: Tool,
}

static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kills every daemon still running when the benchmark panics.
pub fn install_panic_cleanup() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        for pid in live().drain(..) {
            kill_tree(pid);
        }
        default_hook(info);
    }));
}

/// SIGKILL to `pid` and everything it started (a daemon under valgrind or strace).
fn kill_tree(pid: u32) {
    for process in descendants(pid).into_iter().chain([pid]) {
        let _ = kill(Pid::from_raw(process as i32), Signal::SIGKILL);
    }
}

pub struct Daemon {
    /// For messages: "vtpm", "swtpm", or what else runs.
    name: &'static str,
    child: Child,
    ctrl_path: PathBuf,
    pub data: DataAddress,
    stderr_path: PathBuf,
    /// Taken just before the spawn call (fork and exec are part of start-up).
    pub spawned_at: Instant,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// `<program> socket --tpm2 --tpmstate dir=… --ctrl type=unixio,path=…
    /// --server type=unixio,path=…|type=tcp,port=…`, on the daemon CPU.
    pub fn start(launch: &Launch, pinning: &Pinning) -> Daemon {
        let ctrl_path = launch.run_dir.join("ctrl.sock");
        let data = match launch.transport {
            Transport::Unix => DataAddress::Unix(launch.run_dir.join("data.sock")),
            Transport::Tcp => DataAddress::Tcp(free_port()),
        };
        let server = match &data {
            DataAddress::Unix(path) => format!("type=unixio,path={}", path.display()),
            DataAddress::Tcp(port) => format!("type=tcp,port={port}"),
        };
        let args = [
            "socket".to_string(),
            "--tpm2".to_string(),
            "--tpmstate".to_string(),
            format!("dir={}", launch.state_dir.display()),
            "--ctrl".to_string(),
            format!("type=unixio,path={}", ctrl_path.display()),
            "--server".to_string(),
            server,
        ];
        let command = launch.tool.command(launch.flavor, &args);
        Daemon::spawn(
            launch.flavor.name(),
            command,
            launch.run_dir,
            ctrl_path,
            data,
            pinning,
        )
    }

    /// Spawns `command` (stdout discarded, stderr to `run_dir/stderr`) on the daemon CPU
    /// and registers it for the panic cleanup; `ctrl_path` is where it will answer.
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        run_dir: &Path,
        ctrl_path: PathBuf,
        data: DataAddress,
        pinning: &Pinning,
    ) -> Daemon {
        let stderr_path = run_dir.join("stderr");
        let stderr = File::create(&stderr_path).expect("create the daemon's stderr file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let (child, spawned_at) = pinning.spawn_on_daemon_cpu(|| {
            let spawned_at = Instant::now();
            let child = command
                .spawn()
                .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
            (child, spawned_at)
        });
        live().push(child.id());
        Daemon {
            name,
            child,
            ctrl_path,
            data,
            stderr_path,
            spawned_at,
            exited: None,
        }
    }

    /// The daemon's PID (not a valgrind or strace around it: use it without a tool).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls until the control channel answers GET_CAPABILITY; returns the connection
    /// and the time from the spawn call to that answer. Between attempts the client
    /// only yields its CPU (not the daemon's), so the answer is seen within microseconds.
    pub fn wait_control(&mut self, timeout: Duration) -> (CtrlClient, Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(stream) = UnixStream::connect(&self.ctrl_path) {
                let mut client = CtrlClient::from_unix_stream(stream);
                if control_round_trip(&mut client).is_ok() {
                    return (client, self.spawned_at.elapsed());
                }
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited during start-up with {status}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}'s control socket {} did not answer within {timeout:?}",
                self.name,
                self.ctrl_path.display()
            );
            std::thread::yield_now();
        }
    }

    /// The exit status, if the process has ended (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
            if self.exited.is_some() {
                live().retain(|&pid| pid != self.child.id());
            }
        }
        self.exited
    }

    /// Waits for the process to end, checking at most every 200 µs.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} (pid {}) did not exit within {timeout:?}",
                self.name,
                self.child.id()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// CMD_SHUTDOWN, then waits for the process to end; panics unless it ends with 0.
    pub fn shut_down(&mut self, ctrl: &mut CtrlClient, timeout: Duration) {
        send_shutdown(ctrl);
        let status = self.wait_exit(timeout);
        assert!(
            status.success(),
            "{} ended with {status} after CMD_SHUTDOWN; stderr:\n{}",
            self.name,
            self.stderr()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            kill_tree(self.child.id());
            let _ = self.child.wait();
            live().retain(|&pid| pid != self.child.id());
        }
    }
}

/// CMD_SHUTDOWN: the daemon answers 0 and ends.
pub fn send_shutdown(ctrl: &mut CtrlClient) {
    let reply = ctrl.request(ctrl::SHUTDOWN, &[]);
    assert_eq!(reply.rc, 0, "CMD_SHUTDOWN");
}

/// GET_CAPABILITY: a 4-byte request, an 8-byte answer; no allocation on the client.
pub fn control_round_trip(client: &mut CtrlClient) -> std::io::Result<()> {
    client.conn.write_all(&ctrl::GET_CAPABILITY.to_be_bytes())?;
    let mut answer = [0u8; 8];
    client.conn.read_exact(&mut answer)?;
    if answer[..4] != [0; 4] {
        return Err(std::io::Error::other("GET_CAPABILITY failed"));
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free TCP port")
        .port()
}
