//! swtpm_ioctl, vtpm's against Debian's 0.7.1: the same command lines against the same
//! daemon — vtpm's swtpm and Debian's swtpm in turn — must print the same on stdout and
//! stderr and exit the same, for every option and error. Where vtpm deliberately differs
//! (help wording, the version line, a missing newline, `--lock-storage`, CUSE devices,
//! short responses) the tests say so and check vtpm's behaviour on its own. State blobs
//! saved by either tool load into either daemon, and a manual migration with the tool
//! keeps the TPM's state.

#[allow(dead_code)]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ctrl::CtrlClient;
use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use common::tool::{Options, Tool, ToolRun};
use common::tpm2::{StartupType, Tpm2};

/// A daemon with a control channel (UNIX or TCP) and a TCP data port.
struct Daemon {
    process: Process,
    dir: tempfile::TempDir,
    data_port: u16,
    ctrl: Ctrl,
    label: String,
}

enum Ctrl {
    Unix(PathBuf),
    Tcp(u16),
}

impl Daemon {
    fn start(program: &Path, tpm2: bool, tcp_ctrl: bool) -> Daemon {
        let dir = common::short_tempdir();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let data_port = free_port();
        let (ctrl, ctrl_arg) = if tcp_ctrl {
            let port = free_port();
            (Ctrl::Tcp(port), format!("type=tcp,port={port}"))
        } else {
            let path = dir.path().join("ctrl");
            let arg = format!("type=unixio,path={}", path.display());
            (Ctrl::Unix(path), arg)
        };
        let mut args = vec![
            "socket".to_string(),
            "--tpmstate".into(),
            format!("dir={}", state.display()),
            "--ctrl".into(),
            ctrl_arg,
            "--server".into(),
            format!("type=tcp,port={data_port}"),
            "--log".into(),
            format!("file={},level=20", dir.path().join("log").display()),
        ];
        if tpm2 {
            args.push("--tpm2".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(program, &argv, dir.path());
        process.wait_tcp_port(data_port);
        if let Ctrl::Tcp(port) = ctrl {
            process.wait_tcp_port(port);
        }
        let label = format!(
            "{} (TPM {}, {} control)",
            program.display(),
            if tpm2 { "2" } else { "1.2" },
            if tcp_ctrl { "TCP" } else { "UNIX" }
        );
        Daemon {
            process,
            dir,
            data_port,
            ctrl,
            label,
        }
    }

    /// `--unix <path>` or `--tcp :<port>`.
    fn target(&self) -> Vec<String> {
        match &self.ctrl {
            Ctrl::Unix(path) => vec!["--unix".into(), path.display().to_string()],
            Ctrl::Tcp(port) => vec!["--tcp".into(), format!(":{port}")],
        }
    }

    fn ctrl_client(&self) -> CtrlClient {
        match &self.ctrl {
            Ctrl::Unix(path) => CtrlClient::unix(path),
            Ctrl::Tcp(port) => CtrlClient::tcp(*port),
        }
    }

    fn data(&self) -> DataClient {
        DataClient::tcp(self.data_port)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Both daemons, in turn.
fn daemon_programs() -> [PathBuf; 2] {
    [vtpm_swtpm(), debian_swtpm()]
}

/// The parts of a run that must agree; the help text and version line are our own
/// words, so they are replaced by markers once their shape is checked, and swtpm_ioctl's
/// `Unknown TPM state type '<t>'` lacks its newline (vtpm prints one).
fn comparable(run: &ToolRun) -> (Option<i32>, String, String) {
    let mut stdout = run.stdout.clone();
    if let Some(rest) = stdout.strip_prefix("TPM emulator control tool version ") {
        let lines: Vec<&str> = rest.lines().collect();
        stdout = if lines.len() == 1 {
            "<version line>\n".into()
        } else {
            assert_eq!(lines.get(1), Some(&""), "usage layout: {run:?}");
            assert_eq!(
                lines.get(2),
                Some(&"Usage: swtpm_ioctl command <device path>"),
                "usage layout: {run:?}"
            );
            assert!(
                rest.ends_with("\n\n"),
                "usage ends with an empty line: {run:?}"
            );
            "<usage>".into()
        };
    }
    let mut stderr = run.stderr.clone();
    if stderr.starts_with("Unknown TPM state type '") && stderr.ends_with('\'') {
        stderr.push('\n');
    }
    (run.code(), stdout, stderr)
}

/// Runs Debian's swtpm_ioctl, then vtpm's, with the same arguments and asserts that they
/// did the same; returns vtpm's run.
fn same(context: &str, args: &[String], options: &Options, dir: &Path) -> ToolRun {
    let debian = Tool::debian_ioctl().run_with(args, options, dir);
    let vtpm = Tool::vtpm_ioctl().run_with(args, options, dir);
    assert_eq!(
        comparable(&vtpm),
        comparable(&debian),
        "{context}: swtpm_ioctl {args:?}\nvtpm:   {vtpm:?}\nDebian: {debian:?}"
    );
    vtpm
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn with_target(daemon: &Daemon, case: &[&str]) -> Vec<String> {
    let mut args = daemon.target();
    args.extend(words(case));
    args
}

/// Command lines that fail before or while connecting, whatever the daemon does.
#[test]
fn argument_and_connection_errors_match() {
    let dir = common::short_tempdir();
    let daemon = Daemon::start(&vtpm_swtpm(), true, false);
    let socket = match &daemon.ctrl {
        Ctrl::Unix(path) => path.display().to_string(),
        Ctrl::Tcp(_) => unreachable!(),
    };
    let regular_file = dir.path().join("regular");
    std::fs::write(&regular_file, b"x").unwrap();
    let regular_file = regular_file.display().to_string();
    let long_path = format!("/tmp/{}", "a".repeat(103));
    let closed_port = format!(":{}", free_port());
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["-c"],
        vec!["-h"],
        vec!["-h", "abc"],
        vec!["--bogus"],
        vec!["-x"],
        vec!["-t"],
        vec!["--unix"],
        vec!["-l", "x", "-c", "-c"],
        vec!["-c", "-c", "-l", "x"],
        vec!["--bogus", "-c", "-c"],
        vec!["-version"],
        vec!["--vers"],
        vec!["-ve", "-c", "-c"],
        vec!["--help"],
        vec!["-help"],
        vec!["--hel", "--bogus"],
        vec!["-l", "5"],
        vec!["-l", "-1"],
        vec!["-l", ""],
        vec!["-r", "x"],
        vec!["-b", "x"],
        vec!["-b", ""],
        vec!["--info", "x"],
        vec!["--info", "1x"],
        vec!["--info", " "],
        vec!["--info", "99999999999999999999999"],
        vec!["--info=1"],
        vec!["-l=2"],
        vec!["--save", "permanent"],
        vec!["--save", "permanent", "-x"],
        vec!["--load", "volatile"],
        vec!["--load", "permanent", "file"],
        vec!["--tcp", ":abc", "-c"],
        vec!["--tcp", "h:abc", "-c"],
        vec!["--tcp", ":70000", "-c"],
        vec!["--tcp", "127.0.0.1:", "-c"],
        vec!["--tcp", "", "-c"],
        vec!["--tcp", &closed_port, "-c"],
        vec!["--tcp", &closed_port, "--unix", &socket, "-c"],
        vec!["--unix", "/nonexistent/ctrl", "-c"],
        vec!["--unix", &regular_file, "-c"],
        vec!["--unix", &long_path, "-c"],
        vec!["--tpm-device", "/nonexistent/dev", "-c"],
        vec!["--tpm-device", "/nonexistent/dev", "--unix", &socket, "-c"],
        vec!["-c", "/nonexistent/dev"],
        vec!["/nonexistent/dev", "-g", "--unix", &socket],
        vec!["--unix", &socket, "-c", "--bogus"],
        vec!["--unix", &socket, "-c", "-l"],
        vec!["--unix", &socket, "--c"],
        vec!["--unix", &socket, "-stop"],
        vec!["--unix", &socket, "-info", "1"],
        vec!["--unix", &socket, "-sa", "permanent", "f"],
        vec!["--unix", &socket, "-h=abc"],
        vec!["--unix", &socket, "--stop=x"],
        vec!["--unix", &socket, "-e=1"],
        vec!["--unix", &socket, "--save", "bogus", "f"],
        vec!["--unix", &socket, "--load", "bogus", "f"],
        vec!["--unix", &socket, "--save", "permanent", "/nonexistent/f"],
        vec!["--unix", &socket, "--load", "permanent", "/nonexistent/f"],
        vec!["--unix=/nonexistent/ctrl", "-c"],
        vec!["--tcp=:abc", "-c"],
    ];
    let options = Options::default();
    for case in cases {
        same("argument errors", &words(&case), &options, dir.path());
    }
}

/// Every command in every TPM state, TPM 2 and TPM 1.2, on both daemons: each case runs
/// with Debian's tool and then with vtpm's, so each is chosen to answer the same when
/// repeated.
#[test]
fn every_command_matches_in_every_state() {
    for program in daemon_programs() {
        for tpm2 in [true, false] {
            let daemon = Daemon::start(&program, tpm2, false);
            let context = daemon.label.clone();
            let savestate = daemon.path("savestate");
            let notrunning = daemon.path("notrunning");
            let states: Vec<Vec<&str>> = vec![
                // Before INIT.
                vec!["-c"],
                vec!["-g"],
                vec!["-e"],
                vec!["-v"],
                vec!["-C"],
                vec!["-r", "3"],
                vec!["-h", "abc"],
                vec!["-b", "0"],
                vec!["-l", "0"],
                vec!["-l", "4"],
                vec!["--info", "1"],
                vec!["--info", "0"],
                vec!["--info", "3"],
                vec!["--info", "0x2"],
                vec!["--info", "-1"],
                vec!["--info", ""],
                vec!["--save", "permanent", &notrunning],
                vec!["--stop"],
                vec!["-i"],
                // Running.
                vec!["-c"],
                vec!["-e"],
                vec!["-g"],
                vec!["-r", "0"],
                vec!["-r", "3"],
                vec!["-r", "4x"],
                vec!["-l", "2"],
                vec!["-l", "0"],
                vec!["-v"],
                vec!["-C"],
                vec!["-b", "0"],
                vec!["-b", "3000"],
                vec!["--info", "1"],
                vec!["--save", "savestate", &savestate],
                vec!["--load", "savestate", &savestate],
                vec!["-i"],
                vec!["--stop"],
                // Stopped.
                vec!["-e"],
                vec!["-v"],
                vec!["-C"],
                vec!["--save", "volatile", &notrunning],
                vec!["-b", "3000"],
                vec!["-b", "100"],
                vec!["-b", "5000"],
                vec!["-b", "-1"],
                vec!["-b", "0"],
                vec!["--load", "savestate", &savestate],
                vec!["--stop"],
                vec!["-i"],
                vec!["-e"],
            ];
            for case in states {
                same(
                    &context,
                    &with_target(&daemon, &case),
                    &Options::default(),
                    daemon.dir.path(),
                );
            }
            assert_eq!(
                std::fs::read(&savestate).unwrap(),
                b"",
                "{context}: no savestate"
            );
        }
    }
}

/// The same over a TCP control channel.
#[test]
fn tcp_control_channel_matches() {
    for program in daemon_programs() {
        let daemon = Daemon::start(&program, true, true);
        let context = daemon.label.clone();
        let file = daemon.path("blob");
        for case in [
            &["-c"][..],
            &["-e"],
            &["-i"],
            &["-e"],
            &["-g"],
            &["--info", "1"],
            &["-b", "0"],
            &["-l", "1"],
            &["--save", "savestate", &file],
            &["--stop"],
            &["-e"],
            &["--load", "savestate", &file],
            &["-i"],
        ] {
            same(
                &context,
                &with_target(&daemon, case),
                &Options::default(),
                daemon.dir.path(),
            );
        }
    }
}

/// `-s` ends the daemon (exit 0) and prints nothing, with either tool.
#[test]
fn shutdown_ends_the_daemon() {
    for program in daemon_programs() {
        for tool in [Tool::debian_ioctl(), Tool::vtpm_ioctl()] {
            let mut daemon = Daemon::start(&program, true, false);
            let run = tool.run(&with_target(&daemon, &["-s"]), daemon.dir.path());
            run.expect(0, "", "");
            let status = daemon.process.wait_exit(Duration::from_secs(10));
            assert_eq!(
                status.code(),
                Some(0),
                "{} after {}",
                daemon.label,
                tool.label
            );
        }
    }
}

/// HASH_START/DATA/END: both tools hash the same bytes (PCR 17 ends up the same), from
/// the argument and from stdin in 4096-byte pieces, and set the established flag.
#[test]
fn hashing_matches_byte_for_byte() {
    let stdin_data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for program in daemon_programs() {
        let daemon = Daemon::start(&program, true, false);
        let context = daemon.label.clone();
        daemon
            .ctrl_client()
            .request(common::ctrl::INIT, &[0, 0, 0, 0]);
        daemon.data().startup(StartupType::Clear).unwrap();
        let cases: [(&[&str], Option<Vec<u8>>); 5] = [
            (&["-h", "abc"], None),
            (&["-h", ""], None),
            (&["-h", "-"], Some(stdin_data.clone())),
            (&["-h", "-"], Some(stdin_data[..4096].to_vec())),
            (&["-h", "-"], Some(Vec::new())),
        ];
        for (case, stdin) in cases {
            let options = Options {
                stdin,
                ..Options::default()
            };
            let args = with_target(&daemon, case);
            let debian = Tool::debian_ioctl().run_with(&args, &options, daemon.dir.path());
            let pcr_after_debian = daemon.data().pcr_read_sha256(17).unwrap().digest;
            let vtpm = Tool::vtpm_ioctl().run_with(&args, &options, daemon.dir.path());
            let pcr_after_vtpm = daemon.data().pcr_read_sha256(17).unwrap().digest;
            assert_eq!(
                comparable(&vtpm),
                comparable(&debian),
                "{context}: {case:?}"
            );
            vtpm.expect(0, "", "");
            assert_eq!(
                pcr_after_vtpm, pcr_after_debian,
                "{context}: PCR 17 after {case:?}"
            );
        }
        same(
            &context,
            &with_target(&daemon, &["-e"]),
            &Options::default(),
            daemon.dir.path(),
        )
        .expect(0, "tpmEstablished is 1\n", "");
        same(
            &context,
            &with_target(&daemon, &["-r", "3"]),
            &Options::default(),
            daemon.dir.path(),
        );
        same(
            &context,
            &with_target(&daemon, &["-e"]),
            &Options::default(),
            daemon.dir.path(),
        )
        .expect(0, "tpmEstablished is 0\n", "");
    }
}

/// `--save` writes the decrypted blob into a 0600 file, whichever tool; blobs saved by
/// either tool load back with either tool, and the TPM then runs with its state.
#[test]
fn state_blobs_save_and_load_across_tools_and_daemons() {
    for program in daemon_programs() {
        let daemon = Daemon::start(&program, true, false);
        let context = daemon.label.clone();
        let run =
            |tool: &Tool, case: &[&str]| tool.run(&with_target(&daemon, case), daemon.dir.path());
        run(&Tool::vtpm_ioctl(), &["-i"]).expect(0, "", "");
        let mut data = daemon.data();
        data.startup(StartupType::Clear).unwrap();
        data.pcr_extend_sha256(16, &[0x5a; 32]).unwrap();
        let pcr16 = data.pcr_read_sha256(16).unwrap();
        drop(data);
        let mut blobs = Vec::new();
        for tool in [Tool::debian_ioctl(), Tool::vtpm_ioctl()] {
            let permanent = daemon.path(&format!("{}-permanent", tool.name.len() + blobs.len()));
            let volatile = daemon.path(&format!("{}-volatile", tool.name.len() + blobs.len()));
            run(&tool, &["--save", "permanent", &permanent]).expect(0, "", "");
            run(&tool, &["--save", "volatile", &volatile]).expect(0, "", "");
            for file in [&permanent, &volatile] {
                let meta = std::fs::metadata(file).unwrap();
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    0o600,
                    "{context}: {file}"
                );
                assert!(
                    meta.len() > 100,
                    "{context}: {file} has {} bytes",
                    meta.len()
                );
            }
            blobs.push((tool, permanent, volatile));
        }
        // The permanent state did not change in between: both tools saved the same bytes.
        assert_eq!(
            std::fs::read(&blobs[0].1).unwrap(),
            std::fs::read(&blobs[1].1).unwrap(),
            "{context}: permanent blobs"
        );
        // Running: SET_STATEBLOB is refused, by both tools alike.
        same(
            &context,
            &with_target(&daemon, &["--load", "permanent", &blobs[0].1]),
            &Options::default(),
            daemon.dir.path(),
        )
        .expect(1, "", "TPM result from PTM_SET_STATEBLOB: 0xa\n");
        // Each tool loads the blobs the other one saved.
        for (saved, loader) in [(0, 1), (1, 0)] {
            let loader = &blobs[loader].0;
            let (_, permanent, volatile) = &blobs[saved];
            run(loader, &["--stop"]).expect(0, "", "");
            run(loader, &["--load", "permanent", permanent]).expect(0, "", "");
            run(loader, &["--load", "volatile", volatile]).expect(0, "", "");
            run(loader, &["-i"]).expect(0, "", "");
            // Resumed from the volatile state: no Startup needed, the PCR is still there.
            assert_eq!(
                daemon.data().pcr_read_sha256(16).unwrap(),
                pcr16,
                "{context}: PCR 16 after {} loaded blobs",
                loader.label
            );
        }
    }
}

/// A migration done by hand: save on one daemon, stop it, load into another, init; the
/// TPM's state (a PCR) is there. Every pairing of vtpm's and Debian's daemons, with
/// vtpm's tool.
#[test]
fn manual_migration_with_the_tool() {
    let tool = Tool::vtpm_ioctl();
    for source_program in daemon_programs() {
        for destination_program in daemon_programs() {
            let source = Daemon::start(&source_program, true, false);
            let destination = Daemon::start(&destination_program, true, false);
            let context = format!("{} -> {}", source.label, destination.label);
            let on = |daemon: &Daemon, case: &[&str]| {
                tool.run(&with_target(daemon, case), daemon.dir.path())
            };
            on(&source, &["-i"]).expect(0, "", "");
            let mut data = source.data();
            data.startup(StartupType::Clear).unwrap();
            data.pcr_extend_sha256(23, &[0xc3; 32]).unwrap();
            let pcr = data.pcr_read_sha256(23).unwrap();
            drop(data);
            let permanent = source.path("permanent");
            let volatile = source.path("volatile");
            on(&source, &["--save", "permanent", &permanent]).expect(0, "", "");
            on(&source, &["--save", "volatile", &volatile]).expect(0, "", "");
            on(&source, &["--stop"]).expect(0, "", "");
            on(&destination, &["--stop"]).expect(0, "", "");
            on(&destination, &["--load", "permanent", &permanent]).expect(0, "", "");
            on(&destination, &["--load", "volatile", &volatile]).expect(0, "", "");
            on(&destination, &["-i"]).expect(0, "", "");
            let mut data = destination.data();
            assert_eq!(data.pcr_read_sha256(23).unwrap(), pcr, "{context}");
            // The migrated TPM is started already: a second Startup is refused.
            assert!(data.startup(StartupType::Clear).is_err(), "{context}");
        }
    }
}

/// `--lock-storage <n>`: swtpm 0.8 and later; Debian's 0.7.1 tool does not know it and its
/// daemon answers TPM_BAD_ORDINAL. vtpm sends the given count (0.10.2 always sends 0).
#[test]
fn lock_storage() {
    let dir = common::short_tempdir();
    let vtpm_daemon = Daemon::start(&vtpm_swtpm(), true, false);
    let debian_daemon = Daemon::start(&debian_swtpm(), true, false);
    Tool::vtpm_ioctl()
        .run(&with_target(&vtpm_daemon, &["-i"]), dir.path())
        .expect(0, "", "");
    Tool::vtpm_ioctl()
        .run(
            &with_target(&vtpm_daemon, &["--lock-storage", "300"]),
            dir.path(),
        )
        .expect(0, "", "");
    Tool::vtpm_ioctl()
        .run(
            &with_target(&debian_daemon, &["--lock-storage", "3"]),
            dir.path(),
        )
        .expect(1, "", "TPM result from PTM_LOCK_STORAGE: 0xa\n");
    Tool::vtpm_ioctl()
        .run(
            &with_target(&vtpm_daemon, &["--lock-storage", "x"]),
            dir.path(),
        )
        .expect(1, "", "Could not get a retry count (0 or more) from x.\n");
    Tool::debian_ioctl()
        .run(
            &with_target(&vtpm_daemon, &["--lock-storage", "3"]),
            dir.path(),
        )
        .expect(
            1,
            "",
            "swtpm_ioctl: unrecognized option '--lock-storage'\nNo valid command.\n",
        );
    let request = fake::one_request(dir.path(), &[0, 0, 0, 0], |socket| {
        Tool::vtpm_ioctl().run(&["--unix", socket, "--lock-storage", "300"], dir.path())
    });
    assert_eq!(request.0, [0, 0, 0, 0x13, 0, 0, 1, 44]);
    request.1.expect(0, "", "");
}

/// Where vtpm's tool deliberately differs from 0.7.1, checked on its own.
#[test]
fn deliberate_differences() {
    let dir = common::short_tempdir();
    let vtpm = Tool::vtpm_ioctl();
    // The port is quoted as given (0.7.1 quotes the argument minus its first character).
    vtpm.run(&["--tcp", "host:70000", "-c"], dir.path()).expect(
        1,
        "",
        "Port '70000' outside valid range.\n",
    );
    // A negative port is refused (0.7.1 takes -1 as 65535).
    vtpm.run(&["--tcp", "127.0.0.1:-1", "-c"], dir.path())
        .expect(1, "", "Port '-1' outside valid range.\n");
    // A locality is not cut to 32 bits (0.7.1 takes 4294967297 as 1).
    vtpm.run(&["-l", "4294967297", "--unix", "/nonexistent"], dir.path())
        .expect(1, "", "Locality outside valid range of [0..4].\n");
    // The blob type message ends with a newline.
    let daemon = Daemon::start(&vtpm_swtpm(), true, false);
    vtpm.run(&with_target(&daemon, &["--save", "bogus", "f"]), dir.path())
        .expect(1, "", "Unknown TPM state type 'bogus'\n");
    // Character devices would need CUSE ioctls.
    let cuse = vtpm.run(&["--tpm-device", "/dev/null", "-c"], dir.path());
    assert_eq!(cuse.code(), Some(1));
    assert!(
        cuse.stderr.starts_with("Unable to use device '/dev/null': it is a character device, and CUSE devices are not supported"),
        "{cuse:?}"
    );
    // Any other file gets the socket protocol; a regular file has no answer to give
    // (0.7.1 prints whatever was in its buffer).
    let file = dir.path().join("regular");
    std::fs::write(&file, b"").unwrap();
    vtpm.run(&["--tpm-device", file.to_str().unwrap(), "-c"], dir.path()).expect(
        1,
        "",
        "Could not execute PTM_GET_CAPABILITY: the connection closed after 0 of 4 response bytes\n",
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        [0, 0, 0, 1],
        "the request went into the file"
    );
    // The version line and usage are vtpm's own words, in swtpm_ioctl's layout.
    let version = vtpm.run(&["--version"], dir.path());
    assert_eq!(version.code(), Some(0));
    assert!(
        version
            .stdout
            .starts_with("TPM emulator control tool version "),
        "{version:?}"
    );
    assert_eq!(version.stdout.lines().count(), 1);
    let help = vtpm.run(&["--help"], dir.path());
    assert_eq!(help.code(), Some(0));
    for option in [
        "--tpm-device <device>",
        "--tcp [<host>]:[<port>]",
        "--unix <path>",
        "-c ",
        "-i ",
        "--stop ",
        "-s ",
        "-e ",
        "-r <loc>",
        "-v ",
        "-C ",
        "-l <loc>",
        "-h <data>",
        "--save <type> <file>",
        "--load <type> <file>",
        "-g ",
        "-b <buffersize>",
        "--info <flags>",
        "--lock-storage <n>",
        "--version ",
        "--help ",
    ] {
        assert!(
            help.stdout.lines().any(|l| l.starts_with(option)),
            "{option} in {help:?}"
        );
    }
}

/// Answers from a control channel that break the protocol end with a message naming the
/// command, never with made-up output.
#[test]
fn broken_answers_are_reported() {
    let dir = common::short_tempdir();
    let vtpm = Tool::vtpm_ioctl();
    let (_, run) = fake::one_request(dir.path(), &[], |socket| {
        vtpm.run(&["--unix", socket, "-g"], dir.path())
    });
    run.expect(
        1,
        "",
        "Could not execute PTM_GET_CONFIG: the connection closed after 0 of 4 response bytes\n",
    );
    let (_, run) = fake::one_request(dir.path(), &[0, 0, 0, 0, 0, 0], |socket| {
        vtpm.run(&["--unix", socket, "-c"], dir.path())
    });
    run.expect(
        1,
        "",
        "Could not execute PTM_GET_CAPABILITY: the connection closed after 6 of 8 response bytes\n",
    );
    // GET_INFO longer than one answer: vtpm asks again from the next offset.
    let text: Vec<u8> = std::iter::repeat_n(b'x', 5000).chain([0]).collect();
    let answers = vec![
        info_answer(&text, 0, 3072),
        info_answer(&text, 3072, text.len() - 3072),
    ];
    let (requests, run) = fake::requests(dir.path(), answers, |socket| {
        vtpm.run(&["--unix", socket, "--info", "0x40"], dir.path())
    });
    run.expect(0, &format!("{}\n", "x".repeat(5000)), "");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1],
        [
            0, 0, 0, 0x12, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0x0c, 0, 0, 0, 0, 0
        ]
    );
}

fn info_answer(text: &[u8], offset: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [0, text.len() as u32, len as u32] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(&text[offset..offset + len]);
    out
}

/// A control socket served by the test itself, to see the bytes the tool sends and to
/// give it answers no real daemon gives.
mod fake {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::time::Duration;

    /// Serves one connection: reads one request, writes `answer`, closes. Returns the
    /// request and what `client` returned.
    pub fn one_request<T>(
        dir: &Path,
        answer: &[u8],
        client: impl FnOnce(&str) -> T,
    ) -> (Vec<u8>, T) {
        let (mut requests, result) = requests(dir, vec![answer.to_vec()], client);
        (requests.remove(0), result)
    }

    /// Serves one connection, answering each request with the next of `answers`.
    pub fn requests<T>(
        dir: &Path,
        answers: Vec<Vec<u8>>,
        client: impl FnOnce(&str) -> T,
    ) -> (Vec<Vec<u8>>, T) {
        let path = dir.join(format!("fake-{}", answers.len()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut requests = Vec::new();
            for answer in answers {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).unwrap();
                buf.truncate(n);
                requests.push(buf);
                stream.write_all(&answer).unwrap();
            }
            requests
        });
        let result = client(path.to_str().unwrap());
        (server.join().unwrap(), result)
    }
}
