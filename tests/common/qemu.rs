//! A real `qemu-system-x86_64` (TCG) with a tpm-tis or tpm-crb device on an emulator
//! backend, driven by the test over qtest (as the guest) and QMP (as the operator).
//! See /work/shared/reference/qemu-testing.md §1.

use std::fs::{self, File};
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::crb::Crb;
use super::qmp::{Qmp, QmpError};
use super::qtest::Qtest;
use super::tis::Tis;
use super::tpm2::TpmTransport;
use super::{poll_until, read_for_diagnostics};

const QEMU: &str = "qemu-system-x86_64";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
const STATE_TIMEOUT: Duration = Duration::from_secs(30);
/// SeaBIOS takes ~0.15 s under TCG; allow for a loaded machine.
const FIRMWARE_TIMEOUT: Duration = Duration::from_secs(60);
/// SeaBIOS prints this on port 0x402 when it has finished (and measured the boot).
const FIRMWARE_DONE_MARKER: &str = "No bootable device";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpmDevice {
    Tis,
    Crb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    Q35,
    Pc,
}

/// What to start. `new` gives q35, vCPU stopped (`-S`), no firmware log, no
/// `-incoming`; the builder methods change that.
#[derive(Clone, Debug)]
pub struct QemuOptions {
    run_dir: PathBuf,
    ctrl_socket: PathBuf,
    device: TpmDevice,
    machine: Machine,
    start_cpu: bool,
    incoming: Option<String>,
    firmware_log: bool,
}

impl QemuOptions {
    /// QEMU's sockets and logs go in `run_dir`; the backend listens on `ctrl_socket`.
    pub fn new(run_dir: &Path, ctrl_socket: &Path, device: TpmDevice) -> QemuOptions {
        QemuOptions {
            run_dir: run_dir.to_path_buf(),
            ctrl_socket: ctrl_socket.to_path_buf(),
            device,
            machine: Machine::Q35,
            start_cpu: false,
            incoming: None,
            firmware_log: false,
        }
    }

    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    /// Leave out `-S`: SeaBIOS runs (and uses the TPM) at once.
    pub fn run_firmware(mut self) -> Self {
        self.start_cpu = true;
        self
    }

    /// Start as a migration destination, e.g. `unix:/path` or `exec:cat FILE`.
    pub fn incoming(mut self, uri: &str) -> Self {
        self.incoming = Some(uri.to_string());
        self
    }

    /// Log SeaBIOS's debug port (0x402) to a file, for `wait_firmware_done`.
    pub fn firmware_log(mut self) -> Self {
        self.firmware_log = true;
        self
    }
}

pub struct Qemu {
    child: Child,
    exited: Option<ExitStatus>,
    device: TpmDevice,
    qtest: Qtest,
    qmp: Qmp,
    stderr_file: PathBuf,
    firmware_log: Option<PathBuf>,
}

impl Qemu {
    /// Spawns QEMU (in its own process group) and connects qtest and QMP.
    pub fn start(opts: QemuOptions) -> Qemu {
        let qtest_path = opts.run_dir.join("qtest.sock");
        let qmp_path = opts.run_dir.join("qmp.sock");
        let stderr_file = opts.run_dir.join("qemu.stderr");
        let firmware_log = opts.firmware_log.then(|| opts.run_dir.join("firmware.log"));
        // QEMU is the client on both sockets: listen before it starts.
        let qtest_listener = listen(&qtest_path);
        let qmp_listener = listen(&qmp_path);

        let mut command = Command::new(QEMU);
        command.args(qemu_args(
            &opts,
            &qtest_path,
            &qmp_path,
            firmware_log.as_deref(),
        ));
        let output = File::create(&stderr_file).expect("create QEMU stderr file");
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("dup QEMU output file"))
            .stderr(output)
            .process_group(0);
        let child = command.spawn().unwrap_or_else(|err| {
            panic!("spawn {QEMU}: {err} (install it: apt-get install qemu-system-x86)")
        });
        let mut starting = Starting {
            child: Some(child),
            stderr_file: stderr_file.clone(),
        };

        let deadline = Instant::now() + START_TIMEOUT;
        let qtest_stream = starting.accept(&qtest_listener, "qtest", deadline);
        let qmp_stream = starting.accept(&qmp_listener, "QMP", deadline);
        let qmp = Qmp::handshake(qmp_stream, deadline)
            .unwrap_or_else(|err| starting.fail(&format!("QMP handshake: {err}")));
        let _ = fs::remove_file(&qtest_path);
        let _ = fs::remove_file(&qmp_path);
        Qemu {
            child: starting.child.take().expect("child present"),
            exited: None,
            device: opts.device,
            qtest: Qtest::new(qtest_stream),
            qmp,
            stderr_file,
            firmware_log,
        }
    }

    /// Runs a QMP command; panics (with QEMU's stderr) on any error.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Value {
        match self.qmp.execute(command, arguments) {
            Ok(value) => value,
            Err(err) => panic!("QMP {command}: {err}\n{}", self.diagnostics()),
        }
    }

    /// Waits for the QMP event `name` (events already received count).
    pub fn wait_event(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + STATE_TIMEOUT;
        match self.qmp.wait_event(name, deadline) {
            Ok(event) => event,
            Err(err) => panic!(
                "waiting for QMP event {name}: {err}\n{}",
                self.diagnostics()
            ),
        }
    }

    pub fn runstate(&mut self) -> String {
        match self.qmp.runstate() {
            Ok(state) => state,
            Err(err) => panic!("query-status: {err}\n{}", self.diagnostics()),
        }
    }

    /// Polls `query-status` until the runstate is `state`.
    pub fn wait_runstate(&mut self, state: &str) {
        let deadline = Instant::now() + STATE_TIMEOUT;
        poll_until(deadline, &format!("runstate {state}"), || {
            (self.runstate() == state).then_some(())
        });
    }

    /// On a migration destination: waits until the incoming stream has loaded and
    /// returns the new runstate (it mirrors the source's).
    pub fn wait_incoming_done(&mut self) -> String {
        let deadline = Instant::now() + STATE_TIMEOUT;
        poll_until(deadline, "the destination to leave inmigrate", || {
            Some(self.runstate()).filter(|state| state != "inmigrate")
        })
    }

    /// Migrates to `uri` and waits until `query-migrate` says `completed` and the
    /// runstate is `postmigrate`. A failed migration returns its `error-desc`.
    pub fn migrate_to(&mut self, uri: &str) -> Result<(), String> {
        self.qmp
            .execute("migrate", json!({"uri": uri}))
            .map_err(|err| err.to_string())?;
        let deadline = Instant::now() + STATE_TIMEOUT;
        poll_until(deadline, &format!("migration to {uri}"), || {
            let info = self.execute("query-migrate", json!({}));
            match info["status"].as_str() {
                Some("completed") => Some(Ok(())),
                Some("failed" | "cancelled") => Some(Err(format!(
                    "migration {}: {}",
                    info["status"], info["error-desc"]
                ))),
                _ => None,
            }
        })?;
        // "completed" and "postmigrate" are not ordered (qemu-testing.md §5.3).
        self.wait_runstate("postmigrate");
        Ok(())
    }

    /// QMP `quit`; asserts that QEMU exits with status 0. The socket may reset before
    /// the reply arrives, which counts as success.
    pub fn quit(mut self) {
        match self.qmp.execute("quit", json!({})) {
            Ok(_) => {}
            Err(QmpError::Io(err))
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                ) => {}
            Err(err) => panic!("QMP quit: {err}\n{}", self.diagnostics()),
        }
        let status = reap(&mut self.child, EXIT_TIMEOUT);
        self.exited = Some(status);
        assert!(
            status.success(),
            "QEMU exited with {status}\n{}",
            self.diagnostics()
        );
    }

    /// Waits until SeaBIOS has printed `No bootable device` on its debug port: it has
    /// then measured the boot and halted, and no longer touches the TPM.
    pub fn wait_firmware_done(&mut self) {
        let log = self
            .firmware_log
            .clone()
            .expect("wait_firmware_done needs QemuOptions::firmware_log()");
        let deadline = Instant::now() + FIRMWARE_TIMEOUT;
        poll_until(deadline, "SeaBIOS to print 'No bootable device'", || {
            if has_exited(&self.child) {
                let status = reap(&mut self.child, EXIT_TIMEOUT);
                self.exited = Some(status);
                panic!(
                    "QEMU exited with {status} during firmware\n{}",
                    self.diagnostics()
                );
            }
            let text = fs::read(&log).unwrap_or_default();
            String::from_utf8_lossy(&text)
                .contains(FIRMWARE_DONE_MARKER)
                .then_some(())
        });
    }

    /// The TPM device as the guest sees it (TIS on locality 0, or CRB).
    pub fn tpm(&mut self) -> Box<dyn TpmTransport + '_> {
        self.assert_tpm_accessible();
        match self.device {
            TpmDevice::Tis => Box::new(Tis::new(&mut self.qtest, 0)),
            TpmDevice::Crb => Box::new(Crb::new(&mut self.qtest)),
        }
    }

    /// The TIS device on a chosen locality (0–3).
    pub fn tis(&mut self, locality: u8) -> Tis<'_> {
        assert_eq!(
            self.device,
            TpmDevice::Tis,
            "tis() on a {:?} VM",
            self.device
        );
        self.assert_tpm_accessible();
        Tis::new(&mut self.qtest, locality)
    }

    /// Processes QEMU started (its `exec:` migration helpers), by PID.
    pub fn helper_pids(&self) -> Vec<u32> {
        let group = self.child.id();
        processes_in_group(group)
            .filter(|&pid| pid != group)
            .collect()
    }

    /// Raw qtest access, for checks that do not go through the TPM device.
    pub fn qtest(&mut self) -> &mut Qtest {
        &mut self.qtest
    }

    /// QEMU's stderr so far.
    pub fn diagnostics(&self) -> String {
        format!("QEMU output:\n{}", read_for_diagnostics(&self.stderr_file))
    }

    /// On an `inmigrate` destination, reading TIS ACCESS or CRB LOC_STATE hangs QEMU
    /// 7.2 with swtpm 0.7.1 (qemu-testing.md §6.4), so the harness refuses.
    fn assert_tpm_accessible(&mut self) {
        let state = self.runstate();
        assert_ne!(
            state, "inmigrate",
            "test bug: TPM MMIO on an inmigrate destination hangs QEMU"
        );
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // `Child::kill` signals exactly our unreaped child's PID.
            let _ = self.child.kill();
            reap(&mut self.child, EXIT_TIMEOUT);
        }
    }
}

/// A QEMU process that has not finished connecting; kills it if start-up fails.
struct Starting {
    child: Option<Child>,
    stderr_file: PathBuf,
}

impl Starting {
    /// Accepts QEMU's connection on `listener`, failing fast if QEMU exits.
    fn accept(&mut self, listener: &UnixListener, what: &str, deadline: Instant) -> UnixStream {
        poll_until(
            deadline,
            &format!("QEMU to connect to the {what} socket"),
            || match listener.accept() {
                Ok((stream, _)) => Some(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let child = self.child.as_ref().expect("child present");
                    if has_exited(child) {
                        self.fail("QEMU exited during start-up");
                    }
                    None
                }
                Err(err) => self.fail(&format!("accept on the {what} socket: {err}")),
            },
        )
    }

    fn fail(&mut self, why: &str) -> ! {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            status = Some(reap(&mut child, EXIT_TIMEOUT));
        }
        panic!(
            "starting QEMU failed: {why} (exit: {status:?})\nQEMU output:\n{}",
            read_for_diagnostics(&self.stderr_file)
        );
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            reap(&mut child, EXIT_TIMEOUT);
        }
    }
}

fn listen(path: &Path) -> UnixListener {
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .unwrap_or_else(|err| panic!("listen on {}: {err}", path.display()));
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    listener
}

/// The command line of qemu-testing.md §1.2.
fn qemu_args(
    opts: &QemuOptions,
    qtest: &Path,
    qmp: &Path,
    firmware_log: Option<&Path>,
) -> Vec<String> {
    // QEMU's option syntax separates with commas.
    let path = |p: &Path| {
        let s = p.display().to_string();
        assert!(!s.contains(','), "path {s:?} contains a comma");
        s
    };
    let machine = match opts.machine {
        Machine::Q35 => "q35",
        Machine::Pc => "pc",
    };
    let device = match opts.device {
        TpmDevice::Tis => "tpm-tis",
        TpmDevice::Crb => "tpm-crb",
    };
    let mut args: Vec<String> = vec![
        "-machine".into(),
        machine.into(),
        "-accel".into(),
        "tcg".into(),
        "-m".into(),
        "128".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-qtest".into(),
        format!("unix:{}", path(qtest)),
        "-qtest-log".into(),
        "/dev/null".into(),
        "-chardev".into(),
        format!("socket,id=qmp0,path={}", path(qmp)),
        "-mon".into(),
        "chardev=qmp0,mode=control".into(),
        "-chardev".into(),
        format!("socket,id=chrtpm,path={}", path(&opts.ctrl_socket)),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=chrtpm".into(),
        "-device".into(),
        format!("{device},tpmdev=tpm0"),
    ];
    if !opts.start_cpu {
        args.push("-S".into());
    }
    if let Some(uri) = &opts.incoming {
        args.push("-incoming".into());
        args.push(uri.clone());
    }
    if let Some(log) = firmware_log {
        args.push("-chardev".into());
        args.push(format!("file,id=fwlog,path={}", path(log)));
        args.push("-device".into());
        args.push("isa-debugcon,iobase=0x402,chardev=fwlog".into());
    }
    args
}

/// Whether QEMU has exited. It is not reaped here (unlike `Child::try_wait`): see `reap`.
fn has_exited(child: &Child) -> bool {
    let pid = child.id();
    let state = process_state(pid).unwrap_or_else(|| panic!("QEMU {pid} vanished unreaped"));
    state == 'Z'
}

/// Waits until QEMU has exited, kills the rest of its process group (the `exec:`
/// migration helpers, which outlive it), then reaps it. Until it is reaped QEMU is a
/// zombie, so neither its PID nor its process-group number can be reused meanwhile:
/// every process found in that group is one of QEMU's.
fn reap(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    poll_until(deadline, "QEMU to exit", || has_exited(child).then_some(()));
    let group = child.id();
    // Repeat until none is alive: signals land asynchronously, and a shell helper may
    // fork while the group is being scanned.
    poll_until(deadline, "QEMU's exec: helpers to die", || {
        let alive: Vec<u32> = processes_in_group(group)
            .filter(|&pid| pid != group && process_state(pid).is_some_and(|s| s != 'Z'))
            .collect();
        for &pid in &alive {
            // SAFETY: kill(2) on a PID of QEMU's process group; no memory is involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        alive.is_empty().then_some(())
    });
    child.wait().expect("reap QEMU")
}

/// The state letter in /proc/PID/stat (`R`, `S`, `Z`, …); None if there is no such PID.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp …"; comm may contain spaces and parens.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Every PID whose process group is `group`.
fn processes_in_group(group: u32) -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(move |entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let pgrp: u32 = fields.nth(2)?.parse().ok()?; // after state and ppid
            (pgrp == group).then_some(pid)
        })
}
