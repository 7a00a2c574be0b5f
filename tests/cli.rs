//! The command line as a user sees it: help, version, front ends, getopt errors and
//! abbreviations, `--print-capabilities`, `--print-states`, the options this build
//! refuses, bad `key=value` values, and `-f 0`. Where swtpm 0.7.1 behaves the same, its
//! output is the reference (`/usr/bin/swtpm` runs the same command line).

#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::ctrl::{CtrlClient, INIT, SHUTDOWN, STORE_VOLATILE, be};
use common::data::DataClient;
use common::process::{Finished, Process, debian_swtpm, free_port, vtpm_swtpm};

const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `program args...` to its end (output captured), in a fresh working directory.
fn run(program: &Path, args: &[&str]) -> Finished {
    let dir = common::short_tempdir();
    Process::start_with(
        Command::new(program).args(args).current_dir(dir.path()),
        dir.path(),
    )
    .finish(RUN_TIMEOUT)
}

fn vtpm(args: &[&str]) -> Finished {
    run(&vtpm_swtpm(), args)
}

fn swtpm(args: &[&str]) -> Finished {
    run(&debian_swtpm(), args)
}

/// Runs vtpm with `fds` inherited (for options that take a descriptor number).
fn vtpm_inheriting(args: &[String], fds: &[&OwnedFd]) -> Finished {
    let dir = common::short_tempdir();
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    Process::start_inheriting(Command::new(vtpm_swtpm()).args(args), dir.path(), &borrowed)
        .finish(RUN_TIMEOUT)
}

fn assert_exit(out: &Finished, code: i32, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}: {out:#?}");
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn new_dir(parent: &tempfile::TempDir, name: &str) -> PathBuf {
    let dir = parent.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    dir
}

fn dir_arg(dir: &Path) -> String {
    format!("dir={}", dir.display())
}

// ---------------------------------------------------------------- top level

#[test]
fn no_arguments_is_an_error() {
    let out = vtpm(&[]);
    assert_exit(&out, 1, "swtpm");
    assert!(
        out.stderr.contains("Missing TPM interface type."),
        "{out:#?}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn help_goes_to_stdout() {
    for flag in ["--help", "-h"] {
        let out = vtpm(&[flag]);
        assert_exit(&out, 0, flag);
        assert!(out.stderr.is_empty(), "{out:#?}");
        for needed in ["Usage:", "socket", "chardev", "--version"] {
            assert!(
                out.stdout.contains(needed),
                "{flag}: no {needed}:\n{}",
                out.stdout
            );
        }
        // swtpm's test suite greps `swtpm --help` for "cuse" to decide whether to run its
        // CUSE tests; this build has no CUSE front end.
        assert!(!out.stdout.contains("cuse"), "{}", out.stdout);
    }
}

/// Every option name a help text mentions (`--long` and `-x`).
fn option_names(help: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        let is_long = word.len() > 2 && word.starts_with("--");
        let is_short = word.len() == 2 && word.starts_with('-') && word != "--";
        if (is_long || is_short) && !word.ends_with('-') {
            names.insert(word.to_owned());
        }
    }
    names
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn socket_help_lists_every_option() {
    let out = vtpm(&["socket", "--help"]);
    assert_exit(&out, 0, "socket --help");
    assert!(out.stderr.is_empty(), "{out:#?}");
    assert!(out.stdout.starts_with("Usage: "), "{}", out.stdout);
    // QEMU's tests check that `swtpm socket --help` mentions --tpm2.
    assert!(out.stdout.contains("--tpm2"));
    let expected = set(&[
        "-p",
        "--port",
        "-f",
        "--fd",
        "-t",
        "--terminate",
        "-d",
        "--daemon",
        "--server",
        "--ctrl",
        "--tpmstate",
        "--log",
        "--pid",
        "--locality",
        "--flags",
        "--tpm2",
        "--key",
        "--migration-key",
        "--migration",
        "-r",
        "--runas",
        "-R",
        "--chroot",
        "--seccomp",
        "--profile",
        "--print-profiles",
        "--print-capabilities",
        "--print-states",
        "--print-info",
        "-h",
        "--help",
    ]);
    assert_eq!(option_names(&out.stdout), expected, "{}", out.stdout);

    // Everything swtpm 0.7.1 offers is offered here too (it misspells one option).
    let theirs = swtpm(&["socket", "--help"]);
    let mut missing: Vec<_> = option_names(&theirs.stdout)
        .difference(&expected)
        .cloned()
        .collect();
    missing.retain(|name| name != "--print-capabilites");
    assert!(
        missing.is_empty(),
        "options of swtpm 0.7.1 not listed: {missing:?}"
    );
}

#[test]
fn chardev_help_lists_its_options() {
    let out = vtpm(&["chardev", "--help"]);
    assert_exit(&out, 0, "chardev --help");
    // swtpm's test suite detects chardev support by the absence of this message.
    assert!(!out.stdout.contains("Unsupported TPM interface type"));
    assert!(out.stderr.is_empty(), "{out:#?}");
    let expected = set(&[
        "-c",
        "--chardev",
        "-f",
        "--fd",
        "-d",
        "--daemon",
        "--vtpm-proxy",
        "--ctrl",
        "--tpmstate",
        "--log",
        "--pid",
        "--locality",
        "--flags",
        "--tpm2",
        "--key",
        "--migration-key",
        "--migration",
        "-r",
        "--runas",
        "-R",
        "--chroot",
        "--seccomp",
        "--profile",
        "--print-profiles",
        "--print-capabilities",
        "--print-states",
        "--print-info",
        "-h",
        "--help",
    ]);
    assert_eq!(option_names(&out.stdout), expected, "{}", out.stdout);
}

#[test]
fn version() {
    for flag in ["--version", "-v"] {
        let out = vtpm(&[flag]);
        assert_exit(&out, 0, flag);
        assert!(out.stdout.starts_with("TPM emulator version "), "{out:#?}");
        assert_eq!(out.stdout.lines().count(), 1, "{out:#?}");
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn cuse_is_refused_clearly() {
    let out = vtpm(&["cuse", "-n", "vtpm0"]);
    assert_exit(&out, 1, "cuse");
    assert!(
        out.stderr.contains("CUSE") && out.stderr.contains("not supported"),
        "{out:#?}"
    );
}

#[test]
fn unknown_interface_prints_usage_on_stderr() {
    let out = vtpm(&["sockets"]);
    assert_exit(&out, 1, "sockets");
    let mut lines = out.stderr.lines();
    assert_eq!(
        lines.next(),
        Some("Unsupported TPM interface type 'sockets'.")
    );
    assert!(out.stderr.contains("Usage: "), "{out:#?}");
    assert!(out.stdout.is_empty());
}

// ---------------------------------------------------------------- getopt

/// An argv-level error: exit 1, the message, then the front end's usage, all on stderr.
fn assert_usage_error(out: &Finished, what: &str) {
    assert_exit(out, 1, what);
    assert!(out.stdout.is_empty(), "{what}: {out:#?}");
    let second = out.stderr.lines().nth(1).unwrap_or_default();
    assert!(
        second.starts_with("Usage: "),
        "{what}: usage follows:\n{}",
        out.stderr
    );
}

#[test]
fn getopt_errors_read_like_swtpm() {
    let cases: &[&[&str]] = &[
        &["socket", "--bogus"],
        &["socket", "--bogus=1"],
        &["socket", "-x"],
        &["socket", "--tpmstate"],
        &["socket", "-p"],
        &["socket", "--tpm2=yes"],
        &["chardev", "--server", "type=tcp"],
        &["chardev", "-p", "1"],
    ];
    for args in cases {
        let ours = vtpm(args);
        assert_usage_error(&ours, &args.join(" "));
        let theirs = swtpm(args);
        assert_eq!(
            first_line(&ours.stderr),
            first_line(&theirs.stderr),
            "{args:?}"
        );
    }
}

#[test]
fn ambiguous_abbreviation_lists_the_candidates() {
    let out = vtpm(&["socket", "--print"]);
    assert_usage_error(&out, "--print");
    let message = first_line(&out.stderr);
    assert!(
        message.starts_with("socket: option '--print' is ambiguous; possibilities:"),
        "{message}"
    );
    for candidate in [
        "'--print-capabilities'",
        "'--print-states'",
        "'--print-info'",
    ] {
        assert!(message.contains(candidate), "{message}");
    }
    let out = vtpm(&["socket", "--tpm", "dir=/x"]);
    assert_usage_error(&out, "--tpm");
    let message = first_line(&out.stderr);
    assert!(
        message.contains("'--tpm' is ambiguous") && message.contains("'--tpm2'"),
        "{message}"
    );
}

#[test]
fn unambiguous_abbreviations_work() {
    let out = vtpm(&["socket", "--print-cap"]);
    assert_exit(&out, 0, "--print-cap");
    assert!(
        out.stdout
            .starts_with("{ \"type\": \"swtpm\", \"features\"")
    );

    // `--tpmst` takes the next word as its value: the states of that directory print.
    let tmp = common::short_tempdir();
    let state = new_dir(&tmp, "state");
    std::fs::write(state.join("tpm2-00.permall"), [0u8; 7]).unwrap();
    let expected = r#"{ "type": "swtpm", "states": [ {"name": "permall", "size": 7} ] }"#;
    for args in [
        vec![
            "socket",
            "--tpm2",
            "--print-st",
            "--tpmst",
            &dir_arg(&state),
        ],
        vec![
            "socket",
            "--tpm2",
            "--print-states",
            &format!("--tpmstate={}", dir_arg(&state)),
        ],
    ] {
        let out = vtpm(&args);
        assert_exit(&out, 0, &args.join(" "));
        assert_eq!(out.stdout, expected);
    }
}

// ---------------------------------------------------------------- --print-capabilities

fn capabilities(args: &[&str]) -> serde_json::Value {
    let out = vtpm(args);
    assert_exit(&out, 0, &args.join(" "));
    assert!(out.stderr.is_empty(), "{out:#?}");
    assert_eq!(
        out.stdout.matches('\n').count(),
        1,
        "one line: {:?}",
        out.stdout
    );
    assert!(out.stdout.ends_with('\n'));
    serde_json::from_str(&out.stdout).unwrap_or_else(|err| panic!("{err}: {}", out.stdout))
}

fn features(caps: &serde_json::Value) -> Vec<String> {
    caps["features"]
        .as_array()
        .expect("features is a list")
        .iter()
        .map(|f| f.as_str().expect("feature names are strings").to_owned())
        .collect()
}

/// What this build implements, in swtpm's order (cli.md §6).
const IMPLEMENTED: &[&str] = &[
    "tpm-1.2",
    "tpm-2.0",
    "tpm-send-command-header",
    "flags-opt-startup",
    "flags-opt-disable-auto-shutdown",
    "ctrl-opt-terminate",
    "cmdarg-seccomp",
    "cmdarg-key-fd",
    "cmdarg-pwd-fd",
    "cmdarg-print-states",
    "cmdarg-chroot",
    "cmdarg-migration",
    "nvram-backend-dir",
    "nvram-backend-file",
    "cmdarg-print-info",
    "tpmstate-opt-lock",
];

fn rsa_sizes(features: &[String]) -> Vec<String> {
    features
        .iter()
        .filter(|f| f.starts_with("rsa-keysize-"))
        .cloned()
        .collect()
}

#[test]
fn print_capabilities_json() {
    let tpm12 = capabilities(&["socket", "--print-capabilities"]);
    let keys: BTreeSet<&str> = tpm12
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["type", "features", "version"]));
    assert_eq!(tpm12["type"], "swtpm");
    assert!(tpm12["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(features(&tpm12), IMPLEMENTED);

    let tpm2 = capabilities(&["socket", "--tpm2", "--print-capabilities"]);
    let tpm2_features = features(&tpm2);
    let rsa = rsa_sizes(&tpm2_features);
    assert!(
        rsa.contains(&"rsa-keysize-2048".to_owned()),
        "{tpm2_features:?}"
    );
    let without_rsa: Vec<String> = tpm2_features
        .iter()
        .filter(|f| !f.starts_with("rsa-keysize-"))
        .cloned()
        .collect();
    assert_eq!(without_rsa, IMPLEMENTED);
    // The sizes come from libtpms: the same library tells swtpm the same sizes.
    let theirs = swtpm(&["socket", "--tpm2", "--print-capabilities"]);
    let theirs: serde_json::Value = serde_json::from_str(&theirs.stdout).unwrap();
    assert_eq!(rsa, rsa_sizes(&features(&theirs)));

    assert_eq!(
        capabilities(&["chardev", "--tpm2", "--print-capabilities"]),
        tpm2
    );
}

#[test]
fn print_capabilities_touches_nothing() {
    let tmp = common::short_tempdir();
    let ctrl = tmp.path().join("ctrl");
    let args = [
        "socket",
        "--print-capabilities",
        "--tpmstate",
        "bogus",
        "--flags",
        "bogus",
        "--ctrl",
        &format!("type=unixio,path={}", ctrl.display()),
        "--pid",
        &format!("file={}", tmp.path().join("pid").display()),
    ];
    let caps = capabilities(&args);
    assert_eq!(features(&caps), IMPLEMENTED);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing created"
    );
}

/// A command line that uses one feature. It runs the whole start-up and ends by itself
/// (`--print-info` or `--print-states` after everything was parsed and checked).
struct Probe {
    feature: &'static str,
    args: Vec<String>,
    /// Inherited descriptors the arguments name.
    fds: Vec<OwnedFd>,
    /// Named in the error when the option is refused.
    option: &'static str,
}

/// A pipe holding `content`, ready for the daemon to read from its read end.
fn pipe_with(content: &[u8]) -> OwnedFd {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    nix::unistd::write(&write, content).unwrap();
    read
}

fn feature_probes(state: &Path) -> Vec<Probe> {
    let tpmstate = dir_arg(state);
    let print_info = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "socket",
            "--tpm2",
            "--print-info",
            "1",
            "--tpmstate",
            &tpmstate,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let probe = |feature, option, args| Probe {
        feature,
        args,
        fds: Vec::new(),
        option,
    };
    let key = pipe_with(b"00112233445566778899aabbccddeeff");
    let key_arg = format!("fd={}", key.as_raw_fd());
    let passphrase = pipe_with(b"a passphrase");
    let passphrase_arg = format!("pwdfd={}", passphrase.as_raw_fd());
    let ctrl = state.with_extension("ctrl");
    vec![
        probe(
            "flags-opt-startup",
            "--flags",
            print_info(&["--flags", "startup-clear"]),
        ),
        probe(
            "flags-opt-disable-auto-shutdown",
            "--flags",
            print_info(&["--flags", "disable-auto-shutdown"]),
        ),
        probe(
            "ctrl-opt-terminate",
            "--ctrl",
            print_info(&[
                "--ctrl",
                &format!("type=unixio,path={},terminate", ctrl.display()),
            ]),
        ),
        probe(
            "cmdarg-print-states",
            "--print-states",
            [
                "socket",
                "--tpm2",
                "--print-states",
                "--tpmstate",
                &tpmstate,
            ]
            .map(String::from)
            .to_vec(),
        ),
        probe("cmdarg-print-info", "--print-info", print_info(&[])),
        probe(
            "nvram-backend-dir",
            "--tpmstate",
            print_info(&[
                "--tpmstate",
                &format!("backend-uri=dir://{}", state.display()),
            ]),
        ),
        probe(
            "nvram-backend-file",
            "--tpmstate",
            print_info(&[
                "--tpmstate",
                &format!("backend-uri=file://{}.img", state.display()),
            ]),
        ),
        probe(
            "tpmstate-opt-lock",
            "--tpmstate",
            print_info(&["--tpmstate", &format!("{tpmstate},lock=false")]),
        ),
        probe(
            "cmdarg-seccomp",
            "--seccomp",
            print_info(&["--seccomp", "action=none"]),
        ),
        probe("cmdarg-chroot", "--chroot", print_info(&["--chroot", "/"])),
        probe(
            "cmdarg-migration",
            "--migration",
            print_info(&["--migration", "release-lock-outgoing"]),
        ),
        probe(
            "cmdarg-print-profiles",
            "--print-profiles",
            ["socket", "--tpm2", "--print-profiles"]
                .map(String::from)
                .to_vec(),
        ),
        probe(
            "cmdarg-profile",
            "--profile",
            print_info(&["--profile", "name=default-v1"]),
        ),
        Probe {
            feature: "cmdarg-key-fd",
            args: print_info(&["--key", &key_arg]),
            fds: vec![key],
            option: "--key",
        },
        Probe {
            feature: "cmdarg-pwd-fd",
            args: print_info(&["--key", &passphrase_arg]),
            fds: vec![passphrase],
            option: "--key",
        },
    ]
}

/// Each option-level feature is advertised exactly when its option works: libvirt and
/// swtpm_setup decide from the list what they may pass.
#[test]
fn advertised_features_are_the_working_options() {
    let advertised = features(&capabilities(&["socket", "--tpm2", "--print-capabilities"]));
    let tmp = common::short_tempdir();
    for probe in feature_probes(&tmp.path().join("state")) {
        if probe.option == "--chroot" && !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: the cmdarg-chroot probe needs root (chroot(2))");
            continue;
        }
        // Every probe gets a fresh state directory (a refused probe must not depend on
        // another's leftovers).
        let state = tmp.path().join("state");
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir(&state).unwrap();
        let fds: Vec<&OwnedFd> = probe.fds.iter().collect();
        let out = vtpm_inheriting(&probe.args, &fds);
        let what = format!("{} ({})", probe.feature, probe.args.join(" "));
        if advertised.iter().any(|f| f == probe.feature) {
            assert_exit(&out, 0, &what);
        } else {
            assert_exit(&out, 1, &what);
            assert!(
                out.stderr.contains(probe.option) && out.stderr.contains("not supported"),
                "{what}: the refusal names {}: {out:#?}",
                probe.option
            );
        }
    }
}

#[test]
fn print_info_reports_the_tpm_version() {
    let tmp = common::short_tempdir();
    for (tpm2, family) in [(true, "2.0"), (false, "1.2")] {
        let state = new_dir(&tmp, if tpm2 { "tpm2" } else { "tpm12" });
        let mut args = vec!["socket", "--print-info", "1"];
        let tpmstate = dir_arg(&state);
        args.extend(["--tpmstate", &tpmstate]);
        if tpm2 {
            args.push("--tpm2");
        }
        let out = vtpm(&args);
        assert_exit(&out, 0, "--print-info 1");
        let info: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(info["TPMSpecification"]["family"], family, "{}", out.stdout);
    }
}

// ---------------------------------------------------------------- --print-states

fn print_states(program: &Path, state: &Path, tpm2: bool) -> String {
    let tpmstate = dir_arg(state);
    let mut args = vec!["socket", "--print-states", "--tpmstate", &tpmstate];
    if tpm2 {
        args.push("--tpm2");
    }
    let out = run(program, &args);
    assert_exit(&out, 0, &format!("{} {args:?}", program.display()));
    out.stdout
}

/// Runs a vtpm daemon on `state`: INIT, optionally STORE_VOLATILE and a TPM 1.2
/// TPM_SaveState, then CMD_SHUTDOWN.
fn make_states(state: &Path, tpm2: bool, volatile: bool, savestate: bool) {
    let run = common::short_tempdir();
    let ctrl_path = run.path().join("ctrl");
    let port = free_port();
    let mut args = vec![
        "socket".to_owned(),
        "--tpmstate".into(),
        dir_arg(state),
        "--ctrl".into(),
        format!("type=unixio,path={}", ctrl_path.display()),
        "--server".into(),
        format!("type=tcp,port={port}"),
    ];
    if tpm2 {
        args.push("--tpm2".into());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut process = Process::start(&vtpm_swtpm(), &argv, run.path());
    process.wait_tcp_port(port);
    let mut ctrl = CtrlClient::unix(&ctrl_path);
    assert_eq!(ctrl.request(INIT, &be(&[0])).rc, 0);
    if savestate {
        let mut data = DataClient::tcp(port);
        // TPM_Startup(ST_CLEAR), then TPM_SaveState.
        data.send_raw(&[0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99, 0, 1]);
        assert_eq!(data.read_once(), [0, 0xc4, 0, 0, 0, 10, 0, 0, 0, 0]);
        data.send_raw(&[0, 0xc1, 0, 0, 0, 10, 0, 0, 0, 0x98]);
        assert_eq!(data.read_once(), [0, 0xc4, 0, 0, 0, 10, 0, 0, 0, 0]);
    }
    if volatile {
        assert_eq!(ctrl.request(STORE_VOLATILE, &[]).rc, 0);
    }
    assert_eq!(ctrl.request(SHUTDOWN, &[]).rc, 0);
    assert!(process.wait_exit(RUN_TIMEOUT).success());
}

#[test]
fn print_states_matches_swtpm() {
    let tmp = common::short_tempdir();
    let empty = new_dir(&tmp, "empty");
    let tpm2_perm = new_dir(&tmp, "tpm2-perm");
    make_states(&tpm2_perm, true, false, false);
    let tpm2_both = new_dir(&tmp, "tpm2-both");
    make_states(&tpm2_both, true, true, false);
    let tpm12_all = new_dir(&tmp, "tpm12-all");
    make_states(&tpm12_all, false, true, true);

    let size = |dir: &Path, name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    let cases = [
        (
            &empty,
            true,
            r#"{ "type": "swtpm", "states": [] }"#.to_owned(),
        ),
        (
            &empty,
            false,
            r#"{ "type": "swtpm", "states": [] }"#.to_owned(),
        ),
        (
            &tpm2_perm,
            true,
            format!(
                r#"{{ "type": "swtpm", "states": [ {{"name": "permall", "size": {}}} ] }}"#,
                size(&tpm2_perm, "tpm2-00.permall")
            ),
        ),
        // Without --tpm2 only the TPM 1.2 names count.
        (
            &tpm2_both,
            false,
            r#"{ "type": "swtpm", "states": [] }"#.to_owned(),
        ),
        (
            &tpm2_both,
            true,
            format!(
                r#"{{ "type": "swtpm", "states": [ {{"name": "permall", "size": {}}}, {{"name": "volatilestate", "size": {}}} ] }}"#,
                size(&tpm2_both, "tpm2-00.permall"),
                size(&tpm2_both, "tpm2-00.volatilestate")
            ),
        ),
        (
            &tpm12_all,
            false,
            format!(
                r#"{{ "type": "swtpm", "states": [ {{"name": "permall", "size": {}}}, {{"name": "volatilestate", "size": {}}}, {{"name": "savestate", "size": {}}} ] }}"#,
                size(&tpm12_all, "tpm-00.permall"),
                size(&tpm12_all, "tpm-00.volatilestate"),
                size(&tpm12_all, "tpm-00.savestate")
            ),
        ),
    ];
    for (dir, tpm2, expected) in cases {
        let what = format!("{} tpm2={tpm2}", dir.display());
        assert_eq!(print_states(&vtpm_swtpm(), dir, tpm2), expected, "{what}");
        assert_eq!(
            print_states(&debian_swtpm(), dir, tpm2),
            expected,
            "swtpm: {what}"
        );
    }
}

#[test]
fn print_states_needs_tpmstate() {
    let tmp = common::short_tempdir();
    let state = new_dir(&tmp, "state");
    let mut command = Command::new(vtpm_swtpm());
    // TPM_PATH alone is not enough (as in swtpm).
    command
        .args(["socket", "--tpm2", "--print-states"])
        .env("TPM_PATH", &state);
    let out = Process::start_with(&mut command, tmp.path()).finish(RUN_TIMEOUT);
    assert_exit(&out, 1, "--print-states without --tpmstate");
    assert_eq!(
        out.stderr,
        "swtpm: Error: --tpmstate option is required for --print-states\n"
    );
    assert!(out.stdout.is_empty());
}

/// As swtpm 0.10.2 (0.7.1 locked the directory and failed): the states of a directory
/// that a running daemon holds, and an empty list for a missing directory.
#[test]
fn print_states_needs_no_lock() {
    let tmp = common::short_tempdir();
    let state = new_dir(&tmp, "state");
    let ctrl_path = tmp.path().join("ctrl");
    let tpmstate = dir_arg(&state);
    let ctrl_arg = format!("type=unixio,path={}", ctrl_path.display());
    let mut holder = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--tpmstate",
            &tpmstate,
            "--ctrl",
            &ctrl_arg,
        ],
        tmp.path(),
    );
    holder.wait_unix_socket(&ctrl_path);
    let mut ctrl = CtrlClient::unix(&ctrl_path);
    assert_eq!(ctrl.request(INIT, &be(&[0])).rc, 0);
    let size = std::fs::metadata(state.join("tpm2-00.permall"))
        .unwrap()
        .len();
    assert_eq!(
        print_states(&vtpm_swtpm(), &state, true),
        format!(r#"{{ "type": "swtpm", "states": [ {{"name": "permall", "size": {size}}} ] }}"#)
    );
    assert_eq!(
        print_states(&vtpm_swtpm(), &tmp.path().join("missing"), true),
        r#"{ "type": "swtpm", "states": [] }"#
    );
    assert_eq!(ctrl.request(SHUTDOWN, &[]).rc, 0);
    assert!(holder.wait_exit(RUN_TIMEOUT).success());
}

// ---------------------------------------------------------------- refused and bad options

/// Options this build parses but does not implement yet: refused at start-up with a
/// message that names them, before anything is created.
#[test]
fn options_not_built_yet_are_refused_by_name() {
    let tmp = common::short_tempdir();
    let ctrl = tmp.path().join("ctrl");
    let ctrl_arg = format!("type=unixio,path={}", ctrl.display());
    let cases: &[(&[&str], &str)] = &[
        (&["--profile", "name=default-v1"], "--profile"),
        (&["--print-profiles"], "--print-profiles"),
    ];
    for (extra, named) in cases {
        let mut args = vec!["socket", "--tpm2", "--ctrl", &ctrl_arg];
        args.extend_from_slice(extra);
        let out = vtpm(&args);
        assert_exit(&out, 1, &format!("{extra:?}"));
        assert!(
            out.stderr.starts_with("swtpm: ")
                && out.stderr.contains(named)
                && out.stderr.contains("not supported"),
            "{extra:?}: {out:#?}"
        );
        assert!(!ctrl.exists(), "{extra:?}: no socket left behind");
    }
}

/// Bad values of the `key=value` options: exit 1 with swtpm's message. `same_as_0_7_1`
/// marks the cases where swtpm 0.7.1 prints the very same line.
#[test]
fn bad_option_values() {
    let tmp = common::short_tempdir();
    let state = new_dir(&tmp, "state");
    let st = |rest: &str| format!("dir={}{rest}", state.display());
    let missing_pid = tmp.path().join("no/pid");
    let missing_ctrl = tmp.path().join("no/ctrl");
    let cases: Vec<(Vec<String>, String, bool)> = vec![
        (
            vec!["--tpmstate".into(), "bogus".into()],
            "Error parsing tpmstate options: Unknown option 'bogus'".into(),
            true,
        ),
        (
            vec!["--tpmstate".into(), "dir=".into()],
            "Error parsing tpmstate options: Unknown option 'dir='".into(),
            true,
        ),
        (
            vec!["--tpmstate".into(), st(",mode=888")],
            "Error parsing tpmstate options: invalid mode type '888'".into(),
            true,
        ),
        (
            vec!["--tpmstate".into(), st(",mode=1777")],
            "Error parsing tpmstate options: mode 1777 is invalid".into(),
            true,
        ),
        (
            vec!["--tpmstate".into(), "mode=0600".into()],
            "The dir or backend-uri parameters is required for the tpmstate option.".into(),
            true,
        ),
        (
            vec!["--ctrl".into(), "bogus".into()],
            "Error parsing ctrl options: Unknown option 'bogus'".into(),
            true,
        ),
        (
            vec!["--ctrl".into(), "type=tcp,port=abc".into()],
            "Error parsing ctrl options: invalid number 'abc'".into(),
            true,
        ),
        (
            vec!["--ctrl".into(), "type=unixio,path=/x,mode=9".into()],
            "Error parsing ctrl options: invalid mode type '9'".into(),
            true,
        ),
        (
            vec!["--ctrl".into(), "type=unixio".into()],
            "Missing path and fd options for UnixIO control channel".into(),
            true,
        ),
        (
            vec!["--ctrl".into(), "type=tcp".into()],
            "Missing port and fd options for TCP control channel".into(),
            true,
        ),
        (
            vec!["--ctrl".into(), "type=tcp,port=70000".into()],
            "TCP control channel port outside valid range".into(),
            true,
        ),
        (
            vec!["--ctrl".into(), "type=foo".into()],
            "Unsupported control channel type: foo".into(),
            false,
        ),
        (
            vec!["--server".into(), "bogus".into()],
            "Error parsing server options: Unknown option 'bogus'".into(),
            true,
        ),
        (
            vec!["--server".into(), "type=tcp,port=x1".into()],
            "Error parsing server options: invalid number 'x1'".into(),
            true,
        ),
        (
            vec!["--server".into(), "type=tcp,port=70000".into()],
            "TCP socket port outside valid range".into(),
            true,
        ),
        (
            vec!["--server".into(), "type=unixio".into()],
            "Missing path and file descriptor option for UnixIO socket".into(),
            true,
        ),
        (
            vec!["--server".into(), "type=tcp,bindaddr=nothost,port=1".into()],
            "Could not parse the bind address 'nothost'".into(),
            true,
        ),
        (
            vec!["--server".into(), "type=foo".into()],
            "Unsupported socket type: foo".into(),
            false,
        ),
        (
            vec!["--log".into(), "bogus".into()],
            "Error parsing logging options: Unknown option 'bogus'".into(),
            true,
        ),
        (
            vec!["--log".into(), "level=x".into()],
            "Error parsing logging options: invalid number 'x'".into(),
            true,
        ),
        (
            vec!["--pid".into(), "bogus".into()],
            "Error parsing pid options: Unknown option 'bogus'".into(),
            true,
        ),
        (
            vec!["--pid".into(), "fd=x".into()],
            "Error parsing pid options: invalid number 'x'".into(),
            true,
        ),
        (
            vec!["--locality".into(), "bogus".into()],
            "Error parsing locality options: Unknown option 'bogus'".into(),
            true,
        ),
        (
            vec!["--flags".into(), "startup-bogus".into()],
            "Error parsing flags options: Unknown option 'startup-bogus'".into(),
            true,
        ),
        // 0.10.2 refuses empty tokens; 0.7.1 skipped them.
        (
            vec!["--flags".into(), "not-need-init,".into()],
            "Error parsing flags options: Unknown option ''".into(),
            false,
        ),
        // Errors of the things the values name: the message names the file.
        (
            vec!["--pid".into(), format!("file={}", missing_pid.display())],
            format!("Could not open pidfile {}", missing_pid.display()),
            false,
        ),
        (
            vec![
                "--ctrl".into(),
                format!("type=unixio,path={}", missing_ctrl.display()),
            ],
            missing_ctrl.display().to_string(),
            false,
        ),
    ];
    for (extra, message, same_as_0_7_1) in &cases {
        let mut args = vec!["socket".to_owned(), "--tpm2".to_owned()];
        args.extend(extra.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let ours = vtpm(&argv);
        assert_exit(&ours, 1, &format!("{extra:?}"));
        assert!(ours.stdout.is_empty(), "{extra:?}: {ours:#?}");
        let line = first_line(&ours.stderr);
        assert!(
            line.starts_with("swtpm: ") && line.contains(message.as_str()),
            "{extra:?}: expected {message:?} in {:?}",
            ours.stderr
        );
        if *same_as_0_7_1 {
            let theirs = swtpm(&argv);
            assert_exit(&theirs, 1, &format!("swtpm 0.7.1 {extra:?}"));
            assert_eq!(ours.stderr, theirs.stderr, "{extra:?}");
        }
    }
}

/// A start-up error is one line that names what failed and says why, once.
#[test]
fn start_up_errors_give_their_cause_once() {
    let tmp = common::short_tempdir();
    let socket = tmp.path().join("missing/ctrl");
    let ctrl_arg = format!("type=unixio,path={}", socket.display());
    let out = vtpm(&["socket", "--tpm2", "--ctrl", &ctrl_arg]);
    assert_exit(&out, 1, "--ctrl in a missing directory");
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    assert!(
        out.stderr.contains(&socket.display().to_string()),
        "{out:#?}"
    );
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "{out:#?}"
    );
}

#[test]
fn standard_descriptors_are_no_data_channel() {
    // fd 0 is /dev/null here: a character device passes the type check, and then the
    // number itself is refused.
    for program in [vtpm_swtpm(), debian_swtpm()] {
        let out = run(&program, &["socket", "--tpm2", "-f", "0"]);
        assert_exit(&out, 1, "-f 0");
        assert_eq!(
            out.stderr,
            "swtpm: Error: Cannot accept file descriptors with values 0, 1, or 2\n",
            "{}",
            program.display()
        );
    }
    let out = vtpm(&["socket", "-f", "x"]);
    assert_exit(&out, 1, "-f x");
    assert_eq!(out.stderr, "swtpm: Cannot parse socket file descriptor.\n");
    let out = vtpm(&["socket", "-f", "999"]);
    assert_exit(&out, 1, "-f 999");
    assert_eq!(
        out.stderr,
        "swtpm: Cannot stat file descriptor: Bad file descriptor\n"
    );
}
