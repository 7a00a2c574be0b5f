//! libvirt's exact swtpm_setup invocations (libvirt-qemu.md §1.3 a–d) with vtpm's
//! swtpm_setup and daemon, as root and as the unprivileged `tss` user; `--runas`; the
//! message a user gets when the local CA's directory is not theirs; encrypted state.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod setup_support;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::{Finished, Process, debian_swtpm, vtpm_swtpm};
use setup_support::*;

const UUID: &str = "0d7a2d1a-4d0b-4c51-9d47-5f4a8d43e1c2";

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// A user libvirt would run swtpm_setup as.
struct Account {
    name: &'static str,
    uid: u32,
    gid: u32,
}

/// The `tss` user (created like Debian's swtpm-tools does when missing), or why not.
fn tss() -> Result<Account, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("these tests switch to the tss user and need root".into());
    }
    if nix::unistd::User::from_name("tss").ok().flatten().is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/bin/false",
                "tss",
            ])
            .status()
            .map_err(|err| format!("useradd: {err}"))?;
        if !status.success() {
            return Err(format!("useradd --system tss failed: {status}"));
        }
    }
    let user = nix::unistd::User::from_name("tss")
        .ok()
        .flatten()
        .ok_or("no tss user after useradd")?;
    Ok(Account {
        name: "tss",
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

/// A directory for one test that another user may enter, with copies of vtpm's
/// swtpm_setup and swtpm side by side (so the default daemon is found next to it and
/// the build directory need not be reachable for that user).
struct Sandbox {
    _temp: tempfile::TempDir,
    root: PathBuf,
    setup: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let temp = common::short_tempdir();
        let root = temp.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = root.join("bin");
        std::fs::create_dir(&bin).unwrap();
        for program in [vtpm_setup(), vtpm_swtpm()] {
            std::fs::copy(&program, bin.join(program.file_name().unwrap())).unwrap();
        }
        Sandbox {
            setup: bin.join("swtpm_setup"),
            _temp: temp,
            root,
        }
    }

    /// A directory owned by `account` (root's when `None`).
    fn dir(&self, name: &str, account: Option<&Account>) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(account) = account {
            chown(&dir, account);
        }
        dir
    }
}

fn chown(path: &Path, account: &Account) {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid)).unwrap();
}

/// Runs vtpm's swtpm_setup with `args` as `account` (via setpriv, as libvirt sets uid
/// and gid) or as root, with only HOME (and XDG_CONFIG_HOME when given) set.
fn run_as(
    sandbox: &Sandbox,
    account: Option<&Account>,
    home: &Path,
    xdg: Option<&Path>,
    args: &[&str],
) -> Finished {
    let mut command = match account {
        Some(account) => {
            let mut command = Command::new("setpriv");
            command.args([
                &format!("--reuid={}", account.uid),
                &format!("--regid={}", account.gid),
                "--init-groups",
                "--",
            ]);
            command.arg(&sandbox.setup);
            command
        }
        None => Command::new(&sandbox.setup),
    };
    command
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin");
    if let Some(xdg) = xdg {
        command.env("XDG_CONFIG_HOME", xdg);
    }
    Process::start_with(&mut command, &sandbox.root).finish(SETUP_TIMEOUT)
}

fn ok(finished: Finished, what: &str) -> Finished {
    assert!(
        finished.status.success(),
        "{what} failed with {}:\n{}{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    finished
}

/// libvirt's calls on a VM's life: first start (twice), reconfiguration, an incoming
/// migration's throw-away state. `account` None = root.
fn libvirt_life(sandbox: &Sandbox, account: Option<&Account>, home: &Path, xdg: Option<&Path>) {
    let state = sandbox.dir(
        &format!("state-{}", account.map_or("root", |a| a.name)),
        account,
    );
    let logs = sandbox.dir(
        &format!("log-{}", account.map_or("root", |a| a.name)),
        account,
    );
    let log = logs.join("vm1-swtpm.log");
    let (state_s, log_s) = (path_str(&state), path_str(&log));
    let vmid = format!("vm1:{UUID}");
    let first_start = [
        "--tpm2",
        "--tpm-state",
        &state_s,
        "--vmid",
        &vmid,
        "--logfile",
        &log_s,
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--not-overwrite",
    ];
    ok(
        run_as(sandbox, account, home, xdg, &first_start),
        "first start",
    );
    let permall = state.join("tpm2-00.permall");
    let made = std::fs::read(&permall).unwrap();
    if let Some(account) = account {
        assert_eq!(
            std::fs::metadata(&permall).unwrap().uid(),
            account.uid,
            "state owned by {}",
            account.name
        );
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("Successfully manufactured"), "{log_text}");
    ok(
        run_as(sandbox, account, home, xdg, &first_start),
        "second start",
    );
    assert_eq!(
        std::fs::read(&permall).unwrap(),
        made,
        "--not-overwrite keeps the state"
    );

    let reconfigure = [
        "--tpm2",
        "--tpm-state",
        &state_s,
        "--logfile",
        &log_s,
        "--pcr-banks",
        "sha256,sha384",
        "--reconfigure",
    ];
    ok(
        run_as(sandbox, account, home, xdg, &reconfigure),
        "reconfigure",
    );

    let incoming = sandbox.dir(
        &format!("incoming-{}", account.map_or("root", |a| a.name)),
        account,
    );
    let incoming_s = path_str(&incoming);
    let migration = [
        "--tpm2",
        "--tpm-state",
        &incoming_s,
        "--logfile",
        &log_s,
        "--overwrite",
    ];
    ok(
        run_as(sandbox, account, home, xdg, &migration),
        "incoming migration",
    );
    ok(
        run_as(sandbox, account, home, xdg, &migration),
        "incoming migration over existing state",
    );
    assert!(incoming.join("tpm2-00.permall").exists());

    // The result runs: the certificates are in NV after the first start.
    let served = ServedState::vtpm(&state, &sandbox.root);
    assert_eq!(
        served.handles("handles-nv-index", &sandbox.root),
        [0x01C0_0002, 0x01C0_0016, 0x01C0_8000]
    );
}

#[test]
fn libvirt_invocations_as_root() {
    let sandbox = Sandbox::new();
    let home = sandbox.dir("root-home", None);
    let xdg = sandbox.dir("root-xdg", None);
    // As root, config files need the 'root' flag (they shadow /etc's).
    let refused = run_as(
        &sandbox,
        None,
        &home,
        Some(&xdg),
        &["--create-config-files", "skip-if-exist"],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stderr.contains("root"), "{}", refused.stderr);
    ok(
        run_as(
            &sandbox,
            None,
            &home,
            Some(&xdg),
            &["--create-config-files", "root"],
        ),
        "create config files",
    );
    let setup_conf = std::fs::read_to_string(xdg.join("swtpm_setup.conf")).unwrap();
    ok(
        run_as(
            &sandbox,
            None,
            &home,
            Some(&xdg),
            &["--create-config-files", "root,skip-if-exist"],
        ),
        "again",
    );
    assert_eq!(
        std::fs::read_to_string(xdg.join("swtpm_setup.conf")).unwrap(),
        setup_conf
    );
    let exists = run_as(
        &sandbox,
        None,
        &home,
        Some(&xdg),
        &["--create-config-files", "root"],
    );
    assert_eq!(
        exists.status.code(),
        Some(1),
        "existing files are not overwritten without 'overwrite'"
    );

    libvirt_life(&sandbox, None, &home, Some(&xdg));
    let ca = xdg.join("var/lib/swtpm-localca");
    assert!(ca.join("issuercert.pem").exists() && ca.join("certserial").exists());

    // TPM 1.2: libvirt's first start without --tpm2.
    let state12 = sandbox.dir("state12", None);
    let state12_s = path_str(&state12);
    let vmid = format!("vm12:{UUID}");
    let args = [
        "--tpm-state",
        &state12_s,
        "--vmid",
        &vmid,
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--not-overwrite",
    ];
    ok(
        run_as(&sandbox, None, &home, Some(&xdg), &args),
        "TPM 1.2 first start",
    );
    assert!(state12.join("tpm-00.permall").exists());
}

#[test]
fn libvirt_session_mode_as_tss() {
    let account = match tss() {
        Ok(account) => account,
        Err(why) => {
            eprintln!("NOT RUN: libvirt_session_mode_as_tss: {why}");
            return;
        }
    };
    let sandbox = Sandbox::new();
    let home = sandbox.dir("tss-home", Some(&account));
    // Session mode: libvirt first creates the user's configuration files.
    let create = ["--create-config-files", "skip-if-exist"];
    ok(
        run_as(&sandbox, Some(&account), &home, None, &create),
        "create config files as tss",
    );
    let conf = home.join(".config/swtpm_setup.conf");
    assert_eq!(std::fs::metadata(&conf).unwrap().uid(), account.uid);
    ok(
        run_as(&sandbox, Some(&account), &home, None, &create),
        "skip-if-exist",
    );
    libvirt_life(&sandbox, Some(&account), &home, None);
    let ca = home.join(".config/var/lib/swtpm-localca");
    assert_eq!(
        std::fs::metadata(ca.join("signkey.pem")).unwrap().uid(),
        account.uid
    );
}

#[test]
fn runas_and_a_ca_directory_the_user_cannot_write() {
    let account = match tss() {
        Ok(account) => account,
        Err(why) => {
            eprintln!("NOT RUN: runas_and_a_ca_directory_the_user_cannot_write: {why}");
            return;
        }
    };
    let sandbox = Sandbox::new();
    let home = sandbox.dir("home", None);
    let config = SetupConfig::write(&sandbox.dir("conf", None), "/usr/bin/swtpm_localca");
    let config_s = path_str(&config.setup_conf);
    // The CA directory belongs to root, as after a root-run setup (the classic
    // "Need read/write rights on statedir … for user tss").
    std::fs::create_dir_all(&config.ca_dir).unwrap();
    std::fs::set_permissions(&config.ca_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = sandbox.dir("state", Some(&account));
    let state_s = path_str(&state);
    let args = [
        "--runas",
        "tss",
        "--tpm2",
        "--tpm-state",
        &state_s,
        "--config",
        &config_s,
        "--createek",
        "--create-ek-cert",
    ];
    let failed = run_as(&sandbox, None, &home, None, &args);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "{}{}",
        failed.stdout,
        failed.stderr
    );
    let lock = config.ca_dir.join(".lock.swtpm-localca");
    for needle in [
        "user tss",
        &path_str(&lock),
        "read and write",
        "Permission denied",
    ] {
        assert!(
            failed.stderr.contains(needle),
            "'{needle}' in: {}",
            failed.stderr
        );
    }
    assert!(
        !state.join("tpm2-00.permall").exists(),
        "the partial state is removed"
    );

    // Given the directory, --runas tss works and everything it makes is tss's.
    chown(&config.ca_dir, &account);
    ok(run_as(&sandbox, None, &home, None, &args), "--runas tss");
    for file in [
        state.join("tpm2-00.permall"),
        config.ca_dir.join("signkey.pem"),
    ] {
        assert_eq!(
            std::fs::metadata(&file).unwrap().uid(),
            account.uid,
            "{}",
            file.display()
        );
    }
}

/// A pipe whose read end (returned) is inherited by children and carries `secret`.
fn secret_pipe(secret: &[u8]) -> OwnedFd {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    fcntl(&read, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    nix::unistd::write(&write, secret).unwrap();
    read
}

fn encrypted_first_start(
    daemon: &Path,
    dir: &Path,
    state: &Path,
    config: &SetupConfig,
) -> Finished {
    let pipe = secret_pipe(b"libvirt secret passphrase");
    let fd = pipe.as_raw_fd().to_string();
    let tpm = format!("{} socket", daemon.display());
    let (state_s, config_s) = (path_str(state), path_str(&config.setup_conf));
    let args = [
        "--tpm",
        &tpm,
        "--tpm2",
        "--pwdfile-fd",
        &fd,
        "--cipher",
        "aes-256-cbc",
        "--tpm-state",
        &state_s,
        "--vmid",
        "enc:1",
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--not-overwrite",
        "--config",
        &config_s,
    ];
    let finished = run_setup(&vtpm_setup(), &args, dir);
    drop(pipe);
    finished
}

/// Checks that `state` is encrypted with a 256-bit key and serves it with `daemon`.
fn check_encrypted(daemon: &Path, dir: &Path, state: &Path) {
    let permall = std::fs::read(state.join("tpm2-00.permall")).unwrap();
    let flags = u16::from_be_bytes([permall[4], permall[5]]);
    assert_eq!(
        flags & 0x0009,
        0x0009,
        "encrypted with a 256-bit key: flags {flags:#x}"
    );
    let pwdfile = dir.join("passphrase");
    std::fs::write(&pwdfile, b"libvirt secret passphrase").unwrap();
    let key = format!("pwdfile={},mode=aes-256-cbc", pwdfile.display());
    let served = ServedState::start(daemon, state, true, &["--key", &key], dir);
    assert_eq!(
        served.handles("handles-nv-index", dir),
        [0x01C0_0002, 0x01C0_0016, 0x01C0_8000]
    );
}

#[test]
fn encrypted_state_with_debian_swtpm_as_daemon() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let config = SetupConfig::write(dir, "swtpm_localca");
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    ok(
        encrypted_first_start(&debian_swtpm(), dir, &state, &config),
        "encrypted first start",
    );
    check_encrypted(&debian_swtpm(), dir, &state);

    // --keyfile with the default cipher: a 128-bit key in hex.
    let keyfile = dir.join("key");
    std::fs::write(&keyfile, "00112233445566778899aabbccddeeff\n").unwrap();
    let state = dir.join("state-keyfile");
    std::fs::create_dir(&state).unwrap();
    let tpm = format!("{} socket", debian_swtpm().display());
    let (state_s, keyfile_s) = (path_str(&state), path_str(&keyfile));
    let args = [
        "--tpm",
        &tpm,
        "--tpm2",
        "--keyfile",
        &keyfile_s,
        "--tpm-state",
        &state_s,
        "--createek",
    ];
    ok(run_setup(&vtpm_setup(), &args, dir), "--keyfile");
    let permall = std::fs::read(state.join("tpm2-00.permall")).unwrap();
    assert_eq!(
        u16::from_be_bytes([permall[4], permall[5]]) & 0x0009,
        0x0001,
        "AES-128 encrypted"
    );
    let key = format!("file={keyfile_s}");
    let served = ServedState::start(&debian_swtpm(), &state, true, &["--key", &key], dir);
    assert_eq!(
        served.handles("handles-persistent", dir),
        [0x8101_0001, 0x8101_0016]
    );
}

#[test]
fn encrypted_state_with_vtpm_swtpm() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let caps = Command::new(vtpm_swtpm())
        .args(["socket", "--print-capabilities"])
        .output()
        .unwrap();
    let caps = String::from_utf8_lossy(&caps.stdout).into_owned();
    let setup_caps = ok(
        run_setup(&vtpm_setup(), &["--print-capabilities"], dir),
        "print capabilities",
    );
    if !caps.contains("\"cmdarg-key-fd\"") || !caps.contains("\"cmdarg-pwd-fd\"") {
        // Until the daemon takes --key, swtpm_setup must not tell libvirt it can
        // pass a passphrase, or encrypted VMs would fail at their first start.
        assert!(
            !setup_caps.stdout.contains("cmdarg-pwdfile-fd"),
            "{}",
            setup_caps.stdout
        );
        eprintln!(
            "NOT RUN: encrypted_state_with_vtpm_swtpm: vtpm's swtpm lists no cmdarg-key-fd/cmdarg-pwd-fd yet ({})",
            caps.trim()
        );
        return;
    }
    assert!(
        setup_caps.stdout.contains("\"cmdarg-pwdfile-fd\""),
        "{}",
        setup_caps.stdout
    );
    let config = SetupConfig::write(dir, "swtpm_localca");
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    ok(
        encrypted_first_start(&vtpm_swtpm(), dir, &state, &config),
        "encrypted first start",
    );
    check_encrypted(&vtpm_swtpm(), dir, &state);
}
