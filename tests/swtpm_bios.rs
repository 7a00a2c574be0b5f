//! swtpm_bios, vtpm's against Debian's 0.7.1: the same command lines against the same
//! daemon (vtpm's swtpm and Debian's swtpm in turn, TPM 2 over TCP and UNIX data sockets,
//! TPM 1.2 over a UNIX one), reset between the runs with INIT, must print the same on stdout
//! and stderr and exit the same: success, TPM errors (128), the reset `-ea` asks for
//! (129), connection problems (255) and usage errors (1). Answers that break the
//! protocol come from a fake data socket.

#[allow(dead_code)]
mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ctrl::{CtrlClient, INIT, STOP};
use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use common::tool::{Options, Tool, ToolRun};

/// A daemon with a UNIX control socket and a TCP (`disconnect`) or UNIX data socket.
struct Daemon {
    _process: Process,
    dir: tempfile::TempDir,
    ctrl: PathBuf,
    data: Data,
    label: String,
}

enum Data {
    Tcp(u16),
    Unix(PathBuf),
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    /// `--server type=tcp,port=P,disconnect`: closes after each answer.
    Tcp,
    /// `--server type=unixio,path=P`: one client at a time until it closes.
    Unix,
}

impl Daemon {
    fn start(program: &Path, tpm2: bool, transport: Transport) -> Daemon {
        let dir = common::short_tempdir();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let ctrl = dir.path().join("ctrl");
        let (data, server) = match transport {
            Transport::Tcp => {
                let port = free_port();
                (Data::Tcp(port), format!("type=tcp,port={port},disconnect"))
            }
            Transport::Unix => {
                let path = dir.path().join("data");
                let server = format!("type=unixio,path={}", path.display());
                (Data::Unix(path), server)
            }
        };
        let mut args = vec![
            "socket".to_string(),
            "--tpmstate".into(),
            format!("dir={}", state.display()),
            "--ctrl".into(),
            format!("type=unixio,path={}", ctrl.display()),
            "--server".into(),
            server,
            "--log".into(),
            format!("file={},level=20", dir.path().join("log").display()),
        ];
        if tpm2 {
            args.push("--tpm2".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(program, &argv, dir.path());
        match &data {
            Data::Tcp(port) => process.wait_tcp_port(*port),
            Data::Unix(path) => process.wait_unix_socket(path),
        }
        process.wait_unix_socket(&ctrl);
        let label = format!(
            "{} (TPM {}, {transport:?} data socket)",
            program.display(),
            if tpm2 { "2" } else { "1.2" }
        );
        Daemon {
            _process: process,
            dir,
            ctrl,
            data,
            label,
        }
    }

    fn target(&self) -> Vec<String> {
        match &self.data {
            Data::Tcp(port) => vec!["--tcp".into(), format!(":{port}")],
            Data::Unix(path) => vec!["--unix".into(), path.display().to_string()],
        }
    }

    fn control(&self, code: u32, body: &[u8]) {
        let reply = CtrlClient::unix(&self.ctrl).request(code, body);
        assert_eq!(reply.rc, 0, "{}: control command {code:#x}", self.label);
    }

    /// INIT: a fresh TPM_Init, as after a reset, before each tool run.
    fn init(&self) {
        self.control(INIT, &[0, 0, 0, 0]);
    }

    /// One raw TPM command on a connection of its own; returns the response code.
    fn raw(&self, command: &[u8]) -> u32 {
        let mut client = match &self.data {
            Data::Tcp(port) => DataClient::tcp(*port),
            Data::Unix(path) => DataClient::unix(UnixStream::connect(path).unwrap()),
        };
        client.send_raw(command);
        let response = client.read_response();
        u32::from_be_bytes(response[6..10].try_into().unwrap())
    }

    fn run(&self, tool: &Tool, args: &[&str]) -> ToolRun {
        let mut all = self.target();
        all.extend(args.iter().map(|a| a.to_string()));
        tool.run(&all, self.dir.path())
    }
}

fn daemon_programs() -> [PathBuf; 2] {
    [vtpm_swtpm(), debian_swtpm()]
}

/// What must agree: the usage text is our own wording (checked for its shape), and
/// 0.7.1 misspells TPM2_IncrementalSelfTest in its message.
fn comparable(run: &ToolRun) -> (Option<i32>, String, String) {
    let mut stdout = run
        .stdout
        .replace("TPM2_ImcrementalSelfTest", "TPM2_IncrementalSelfTest");
    if let Some(rest) = stdout.strip_prefix("TPM emulator BIOS emulator version ") {
        let lines: Vec<&str> = rest.lines().collect();
        assert_eq!(lines.get(1), Some(&""), "usage layout: {run:?}");
        assert_eq!(
            lines.get(2),
            Some(&"swtpm_bios [options]"),
            "usage layout: {run:?}"
        );
        for option in [
            "--tpm-device",
            "--tcp",
            "--unix",
            "--tpm2",
            "-cs",
            "-ea",
            "-u",
        ] {
            assert!(
                rest.contains(&format!("\t{option} ")),
                "{option} in usage: {run:?}"
            );
        }
        stdout = "<usage>".into();
    }
    (run.code(), stdout, run.stderr.clone())
}

fn assert_same(context: &str, args: &[&str], vtpm: &ToolRun, debian: &ToolRun) {
    assert_eq!(
        comparable(vtpm),
        comparable(debian),
        "{context}: swtpm_bios {args:?}\nvtpm:   {vtpm:?}\nDebian: {debian:?}"
    );
}

/// Lets `prepare` set the TPM up, runs each of `before` with the tool, then `args`; does
/// so with Debian's tool and with vtpm's, and compares the last runs.
fn same_after(
    daemon: &Daemon,
    prepare: &dyn Fn(&Daemon),
    before: &[&[&str]],
    args: &[&str],
) -> ToolRun {
    let mut runs = Vec::new();
    for tool in [Tool::debian_bios(), Tool::vtpm_bios()] {
        prepare(daemon);
        for earlier in before {
            daemon.run(&tool, earlier);
        }
        runs.push(daemon.run(&tool, args));
    }
    let context = format!("{} after {before:?}", daemon.label);
    assert_same(&context, args, &runs[1], &runs[0]);
    runs.pop().unwrap()
}

/// A fresh TPM_Init, as after a reset.
fn reset(daemon: &Daemon) {
    daemon.init();
}

/// STOP: every TPM command fails. Repeating it changes nothing.
fn stopped(daemon: &Daemon) {
    daemon.control(STOP, &[]);
}

#[test]
fn tpm2_sequences_match() {
    for (program, transport) in daemon_programs().into_iter().flat_map(|program| {
        [
            (program.clone(), Transport::Tcp),
            (program, Transport::Unix),
        ]
    }) {
        let daemon = Daemon::start(&program, true, transport);
        let cases: &[(&[&[&str]], &[&str])] = &[
            (&[], &["--tpm2"]),
            (&[], &["--tpm2", "-c", "-cs", "-u"]),
            (&[], &["--tpm2", "-s"]),
            (&[], &["--tpm2", "-d"]),
            (&[], &["--tpm2", "-n"]),
            (&[], &["--tpm2", "-o", "-ea"]),
            (&[], &["--tpm2", "-n", "-cs", "-u"]),
            (&[], &["-tpm2", "surplus", "words"]),
            (&[&["--tpm2"]], &["--tpm2"]),
            (&[&["--tpm2", "-u"]], &["--tpm2", "-u", "-cs"]),
        ];
        for (before, args) in cases {
            same_after(&daemon, &reset, before, args);
        }
        let first = same_after(&daemon, &reset, &[], &["--tpm2", "-u"]);
        first.expect(0, "", "");
        let again = same_after(&daemon, &reset, &[&["--tpm2"]], &["--tpm2"]);
        again.expect(128, "TPM2_Startup returned error code 0x00000100\n", "");
        let not_running = same_after(&daemon, &stopped, &[], &["--tpm2", "-cs", "-u"]);
        assert_eq!(
            not_running.stdout.lines().count(),
            3,
            "three errors: {not_running:?}"
        );
        assert_eq!(not_running.code(), Some(128), "{not_running:?}");
    }
}

const TPM12_STARTUP_CLEAR: [u8; 12] = [0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99, 0, 1];
const TPM12_PP_CMD_ENABLE: [u8; 12] = [0, 0xc1, 0, 0, 0, 12, 0x40, 0, 0, 0x0a, 0, 0x20];
const TPM12_PP_PRESENT: [u8; 12] = [0, 0xc1, 0, 0, 0, 12, 0x40, 0, 0, 0x0a, 0, 0x08];
const TPM12_SET_DEACTIVATED_TRUE: [u8; 11] = [0, 0xc1, 0, 0, 0, 11, 0, 0, 0, 0x72, 1];

/// A started TPM 1.2 whose permanent `deactivated` flag is set (it still works until the
/// next Startup).
fn deactivated(daemon: &Daemon) {
    daemon.init();
    for command in [
        &TPM12_STARTUP_CLEAR[..],
        &TPM12_PP_CMD_ENABLE,
        &TPM12_PP_PRESENT,
        &TPM12_SET_DEACTIVATED_TRUE,
    ] {
        assert_eq!(daemon.raw(command), 0, "{}: {command:02x?}", daemon.label);
    }
}

/// libtpms needs a few hundred milliseconds for a TPM 1.2 INIT, so each case covers
/// several paths and the two daemons run side by side.
#[test]
fn tpm12_sequences_match() {
    std::thread::scope(|scope| {
        for program in daemon_programs() {
            scope.spawn(move || tpm12_sequences_on(&program));
        }
    });
}

fn tpm12_sequences_on(program: &Path) {
    let daemon = Daemon::start(program, false, Transport::Unix);
    // Everything succeeds: Startup, physical presence, -ea reads the flags of an active
    // TPM, enable, activate, self-test, giving up physical presence.
    same_after(&daemon, &reset, &[], &["-c", "-ea", "-cs", "-u"]).expect(0, "", "");
    // Startup(DEACTIVATED) skips the middle part; -cs and -u still run.
    same_after(&daemon, &reset, &[], &["-d", "-ea", "-cs", "-u"]).expect(0, "", "");
    // No Startup: every command fails (TPM_INVALID_POSTINIT), each one reported.
    let failing = same_after(&daemon, &reset, &[], &["-n", "-ea", "-cs", "-u"]);
    assert_eq!(failing.code(), Some(128), "{failing:?}");
    assert_eq!(failing.stderr.lines().count(), 8, "{failing:?}");
    // A second Startup, with physical presence locked by the first run's -u.
    same_after(&daemon, &reset, &[&["-u"]], &["-u", "-cs"]);
    same_after(&daemon, &reset, &[], &["-s", "-o"]);
    same_after(&daemon, &stopped, &[], &["-ea"]);
    // -ea on a deactivated TPM: activated, but only a reset makes that count.
    same_after(&daemon, &deactivated, &[], &["-n", "-ea", "-cs", "-u"]).expect(
        129,
        "TPM requires a reset\n",
        "",
    );
}

/// Errors before any TPM command: options, targets, the environment.
#[test]
fn usage_and_connection_errors_match() {
    let dir = common::short_tempdir();
    let daemon = Daemon::start(&vtpm_swtpm(), true, Transport::Tcp);
    let closed_port = format!(":{}", free_port());
    let long_path = format!("/tmp/{}", "a".repeat(103));
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["-h"],
        vec!["-h", "-x"],
        vec!["-x", "-h"],
        vec!["-v"],
        vec!["--help"],
        vec!["--version"],
        vec!["-t"],
        vec!["--tpm"],
        vec!["-c=1"],
        vec!["-cx"],
        vec!["--unix"],
        vec!["--tcp", ":abc"],
        vec!["--tcp", "h:abc"],
        vec!["--tcp", ":70000"],
        vec!["--tcp", "127.0.0.1:"],
        vec!["--tcp", ""],
        vec!["--tcp", &closed_port],
        vec!["--tcp", &closed_port, "--tpm2"],
        vec!["--unix", "/nonexistent/data"],
        vec!["--unix", &long_path],
        vec!["--tpm-device", "/nonexistent/dev"],
        vec!["--tpm-device", "/nonexistent/dev", "--tcp", &closed_port],
        vec!["--tpm-device", "/dev/null"],
        vec!["--tpm-device", "/dev/null", "-n", "-o"],
        vec!["--tcp", &closed_port, "--unix", "/nonexistent/data"],
    ];
    for args in cases {
        let debian = Tool::debian_bios().run(&args, dir.path());
        let vtpm = Tool::vtpm_bios().run(&args, dir.path());
        assert_same("usage and connection errors", &args, &vtpm, &debian);
    }
    // The environment: TPM_DEVICE, and TCSD_* selecting TCP without a target option.
    let Data::Tcp(port) = daemon.data else {
        unreachable!("a TPM 2 daemon serves TCP")
    };
    let env = |pairs: &[(&str, &str)]| Options {
        stdin: None,
        env: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect(),
    };
    let port = port.to_string();
    let closed = closed_port[1..].to_string();
    let cases = [
        (env(&[("TPM_DEVICE", "/nonexistent/dev")]), vec![]),
        (
            env(&[
                ("TCSD_USE_TCP_DEVICE", ""),
                ("TCSD_TCP_DEVICE_PORT", &closed),
            ]),
            vec![],
        ),
        (
            env(&[
                ("TCSD_USE_TCP_DEVICE", "1"),
                ("TCSD_TCP_DEVICE_PORT", &port),
            ]),
            vec!["--tpm2", "-n", "-cs"],
        ),
        (
            env(&[
                ("TCSD_USE_TCP_DEVICE", "1"),
                ("TCSD_TCP_DEVICE_HOSTNAME", "127.0.0.1"),
                ("TCSD_TCP_DEVICE_PORT", &port),
            ]),
            vec!["--tpm2", "-n", "-cs"],
        ),
        (
            env(&[
                ("TCSD_TCP_DEVICE_PORT", &port),
                ("TPM_DEVICE", "/nonexistent/dev"),
            ]),
            vec!["--tpm2"],
        ),
        (
            env(&[
                ("TCSD_USE_TCP_DEVICE", "1"),
                ("TCSD_TCP_DEVICE_PORT", &port),
            ]),
            vec!["--unix", "/nonexistent/data"],
        ),
    ];
    reset(&daemon);
    for (options, args) in &cases {
        let debian = Tool::debian_bios().run_with(args, options, dir.path());
        let vtpm = Tool::vtpm_bios().run_with(args, options, dir.path());
        assert_same(
            &format!("environment {:?}", options.env),
            args,
            &vtpm,
            &debian,
        );
    }
}

/// Where vtpm's tool deliberately differs from 0.7.1.
#[test]
fn deliberate_differences() {
    let dir = common::short_tempdir();
    let vtpm = Tool::vtpm_bios();
    vtpm.run(&["--tcp", "host:70000"], dir.path()).expect(
        1,
        "",
        "Port '70000' outside valid range.\n",
    );
    let env = |port: &str| Options {
        stdin: None,
        env: vec![
            ("TCSD_USE_TCP_DEVICE".into(), "1".into()),
            ("TCSD_TCP_DEVICE_PORT".into(), port.into()),
        ],
    };
    vtpm.run_with(&[] as &[&str], &env("abc"), dir.path())
        .expect(1, "", "TCSD_TCP_DEVICE_PORT: Invalid port 'abc'\n");
    vtpm.run_with(&[] as &[&str], &env("70000"), dir.path())
        .expect(
            1,
            "",
            "TCSD_TCP_DEVICE_PORT: Port '70000' outside valid range.\n",
        );
}

/// A data socket served by the test: one connection per command, each answered with the
/// next of `answers`; returns the commands received and the tool's run.
fn fake_server(
    dir: &Path,
    answers: Vec<Vec<u8>>,
    tool: &Tool,
    args: &[&str],
) -> (Vec<Vec<u8>>, ToolRun) {
    let path = dir.join("fake-data");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(false).unwrap();
    let count = answers.len();
    let server = std::thread::spawn(move || {
        let mut commands = Vec::new();
        for answer in answers {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = vec![0u8; 4096];
            let n = stream.read(&mut buf).unwrap();
            buf.truncate(n);
            commands.push(buf);
            stream.write_all(&answer).unwrap();
        }
        commands
    });
    let mut all = vec!["--unix".to_string(), path.display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let run = tool.run(&all, dir);
    if run.code() == Some(255) && count > 1 {
        // The tool gave up early: let the server thread finish.
        for _ in 1..count {
            let _ = UnixStream::connect(&path);
        }
    }
    (server.join().unwrap(), run)
}

#[test]
fn broken_answers_match() {
    let dir = common::short_tempdir();
    let cases: [(Vec<u8>, &str); 4] = [
        (vec![0x80, 1, 0, 0, 0], "Returned packet is too short.\n"),
        (
            vec![0x80, 1, 0, 0, 0, 12, 0, 0, 0, 0],
            "Malformed response.\n",
        ),
        (
            vec![0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0],
            "Malformed response.\n",
        ),
        (Vec::new(), "Returned packet is too short.\n"),
    ];
    for (answer, message) in cases {
        let mut runs = Vec::new();
        for tool in [Tool::debian_bios(), Tool::vtpm_bios()] {
            let (commands, run) = fake_server(dir.path(), vec![answer.clone()], &tool, &["--tpm2"]);
            assert_eq!(commands, [[0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0]]);
            runs.push(run);
        }
        assert_same("broken answer", &[], &runs[1], &runs[0]);
        runs[1].expect(255, "", message);
    }
}

/// TPM 2 `-cs` tests SHA-256 (as swtpm_bios 0.10.2), and `-u` sets 32 fresh random bytes
/// as the platform password.
#[test]
fn tpm2_commands_on_the_wire() {
    let dir = common::short_tempdir();
    let ok = vec![0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0];
    let mut passwords = Vec::new();
    for _ in 0..2 {
        let (commands, run) = fake_server(
            dir.path(),
            vec![ok.clone(), ok.clone(), ok.clone()],
            &Tool::vtpm_bios(),
            &["--tpm2", "-cs", "-u"],
        );
        run.expect(0, "", "");
        assert_eq!(commands[0], [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0]);
        assert_eq!(
            commands[1],
            [0x80, 1, 0, 0, 0, 16, 0, 0, 1, 0x42, 0, 0, 0, 1, 0, 0x0b]
        );
        let change_auth = &commands[2];
        assert_eq!(change_auth.len(), 61);
        assert_eq!(
            change_auth[..29],
            [
                0x80, 2, 0, 0, 0, 61, 0, 0, 1, 0x29, 0x40, 0, 0, 0x0c, 0, 0, 0, 9, 0x40, 0, 0, 9,
                0, 0, 0, 0, 0, 0, 32
            ]
        );
        passwords.push(change_auth[29..].to_vec());
    }
    assert_ne!(passwords[0], passwords[1], "fresh random bytes each run");
    assert!(passwords.iter().all(|p| p.iter().any(|&b| b != 0)));
}
