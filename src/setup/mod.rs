//! vtpm's `swtpm_setup`: simulates TPM manufacturing (EKs, their certificates, the
//! platform certificate, PCR banks) on a fresh TPM state by driving a TPM daemon, as
//! swtpm_setup does (cli.md §11, manufacturing.md §1).
//!
//! * `options`: the command line (pure); `userconf`: config search, per-user files.
//! * `tpm2`, `tpm12`: the TPM commands (pure); `manufacture`: the sequences.
//! * `daemon`: running the TPM daemon; `state`: the state location.
//! * `certs`: certificates from the built-in CA (`crate::localca`) or an external tool.
//! * `capabilities`, `help`: what `--print-capabilities` and `--help` print.

pub mod capabilities;
pub mod certs;
pub mod daemon;
pub mod help;
pub mod log;
pub mod manufacture;
pub mod options;
pub mod state;
pub mod tpm12;
pub mod tpm2;
pub mod userconf;

use std::path::{Path, PathBuf};

use crate::conffile::ConfFile;
use crate::localca::store::{CaError, current_user};

use certs::{BuiltinCa, CertError, CertificateMaker, ExternalTool};
use daemon::{Capabilities, DaemonError, RunOptions, TpmProgram};
pub use log::SetupLog;
use manufacture::{Made, ManufactureError, Tpm2Plan, Tpm12Plan};
use options::{Invocation, Options, RsaKeySize};
use state::{StateError, StateLocation};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the configuration file {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Manufacture(#[from] ManufactureError),
    #[error(
        "the TPM state {0} exists already; use --overwrite to replace it or --not-overwrite to keep it"
    )]
    StateExists(String),
    #[error("there is no TPM state in {0} to reconfigure")]
    NoState(String),
    #[error("manufacturing failed and the partly made TPM state was removed")]
    Failed(#[source] Box<SetupError>),
    #[error("cannot switch to user '{user}': {reason}")]
    RunAs { user: String, reason: String },
}

/// Runs swtpm_setup with the arguments after the program name; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match options::parse(args) {
        Err(err) => {
            eprintln!("swtpm_setup: {err}");
            eprintln!("Try 'swtpm_setup --help' for the list of options.");
            1
        }
        Ok(Invocation::Help) => {
            print!("{}", help::text());
            0
        }
        Ok(Invocation::Version) => {
            println!("TPM emulator setup tool version {VERSION} (vtpm, swtpm_setup-compatible)");
            0
        }
        Ok(Invocation::PrintCapabilities(tpm)) => match capabilities::print(tpm.as_deref()) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(err) => {
                eprintln!("swtpm_setup: {}", chain(&err));
                1
            }
        },
        Ok(Invocation::CreateConfigFiles(flags)) => match userconf::create_config_files(flags) {
            Ok(files) => {
                for file in files {
                    println!("Wrote {}.", file.display());
                }
                0
            }
            Err(err) => {
                eprintln!("swtpm_setup: {}", chain(&err));
                1
            }
        },
        Ok(Invocation::Setup(options)) => setup(&options),
    }
}

/// An error and its causes on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

fn setup(options: &Options) -> i32 {
    if let Some(user) = &options.runas
        && let Err(err) = run_as(user)
    {
        eprintln!("swtpm_setup: {err}");
        return 1;
    }
    let mut log = match &options.logfile {
        None => SetupLog::stdio(),
        Some(path) => match SetupLog::open(path) {
            Ok(log) => log,
            Err(err) => {
                eprintln!(
                    "swtpm_setup: user {} cannot append to the log file {} (it must not be a symbolic link): {err}",
                    current_user(),
                    path.display()
                );
                return 1;
            }
        },
    };
    for option in &options.deprecated {
        log.info(&format!("{option} is deprecated and has no effect."));
    }
    match run(options, &mut log) {
        Ok(()) => 0,
        Err(err) => {
            log.error(&format!("swtpm_setup: {}", chain(&err)));
            1
        }
    }
}

/// `--runas`: as root, become `user` (a name, or a uid whose group is the same number
/// when no such user exists).
fn run_as(user: &str) -> Result<(), SetupError> {
    use nix::unistd::{Gid, Uid, User, geteuid, initgroups, setgid, setuid};
    let fail = |reason: String| SetupError::RunAs {
        user: user.to_string(),
        reason,
    };
    let entry = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => Some(
            User::from_name(user)
                .map_err(|err| fail(err.to_string()))?
                .ok_or_else(|| fail("there is no such user".into()))?,
        ),
    };
    let (uid, gid, name) = match &entry {
        Some(entry) => (entry.uid, entry.gid, Some(entry.name.clone())),
        None => {
            let id = user.parse::<u32>().unwrap_or_default();
            (Uid::from_raw(id), Gid::from_raw(id), None)
        }
    };
    if !geteuid().is_root() {
        return if geteuid() == uid {
            Ok(())
        } else {
            Err(fail(format!(
                "only root can switch users, and this is {}",
                current_user()
            )))
        };
    }
    if let Some(name) = name {
        let name = std::ffi::CString::new(name).map_err(|err| fail(err.to_string()))?;
        initgroups(&name, gid).map_err(|err| fail(format!("initgroups: {err}")))?;
    } else {
        nix::unistd::setgroups(&[gid]).map_err(|err| fail(format!("setgroups: {err}")))?;
    }
    setgid(gid).map_err(|err| fail(format!("setgid: {err}")))?;
    setuid(uid).map_err(|err| fail(format!("setuid: {err}")))?;
    Ok(())
}

fn invalid(message: impl Into<String>) -> SetupError {
    SetupError::Invalid(message.into())
}

/// Checks the combinations cli.md §11.1 rules out.
fn validate(options: &Options) -> Result<(), SetupError> {
    let given = |flags: &[(bool, &str)]| -> Vec<String> {
        flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_string())
            .collect()
    };
    if options.tpm2 {
        if options.take_ownership {
            return Err(invalid(
                "--take-ownership is for a TPM 1.2; leave out --tpm2 or this option",
            ));
        }
    } else {
        let tpm2_only = given(&[
            (options.ecc, "--ecc"),
            (options.create_spk, "--create-spk"),
            (options.reconfigure, "--reconfigure"),
            (options.allow_signing, "--allow-signing"),
            (options.decryption, "--decryption"),
            (options.pcr_banks.is_some(), "--pcr-banks"),
        ]);
        if !tpm2_only.is_empty() {
            let verb = if tpm2_only.len() == 1 {
                "needs"
            } else {
                "need"
            };
            return Err(invalid(format!("{} {verb} --tpm2", tpm2_only.join(", "))));
        }
    }
    if options.reconfigure {
        let conflicting = given(&[
            (options.createek, "--createek"),
            (options.create_ek_cert, "--create-ek-cert"),
            (options.create_platform_cert, "--create-platform-cert"),
            (options.create_spk, "--create-spk"),
            (options.allow_signing, "--allow-signing"),
            (options.decryption, "--decryption"),
            (options.ecc, "--ecc"),
            (options.lock_nvram, "--lock-nvram"),
            (
                options.write_ek_cert_files.is_some(),
                "--write-ek-cert-files",
            ),
            (options.overwrite, "--overwrite"),
            (options.not_overwrite, "--not-overwrite"),
        ]);
        if !conflicting.is_empty() {
            return Err(invalid(format!(
                "--reconfigure only changes the PCR banks of existing state; it cannot be combined with {}",
                conflicting.join(", ")
            )));
        }
    }
    if options.overwrite && options.not_overwrite {
        return Err(invalid(
            "--overwrite and --not-overwrite exclude each other",
        ));
    }
    let keys = given(&[
        (options.keyfile.is_some(), "--keyfile"),
        (options.keyfile_fd.is_some(), "--keyfile-fd"),
        (options.pwdfile.is_some(), "--pwdfile"),
        (options.pwdfile_fd.is_some(), "--pwdfile-fd"),
    ]);
    if keys.len() > 1 {
        return Err(invalid(format!(
            "only one of {} may be given",
            keys.join(", ")
        )));
    }
    if options.owner_well_known && options.ownerpass.is_some() {
        return Err(invalid(
            "--ownerpass and --owner-well-known exclude each other",
        ));
    }
    if options.srk_well_known && options.srkpass.is_some() {
        return Err(invalid("--srkpass and --srk-well-known exclude each other"));
    }
    for fd in [options.keyfile_fd, options.pwdfile_fd]
        .into_iter()
        .flatten()
    {
        if !Path::new(&format!("/proc/self/fd/{fd}")).exists() {
            return Err(invalid(format!("file descriptor {fd} is not open")));
        }
    }
    Ok(())
}

/// swtpm_setup.conf: `--config`, else the user's, else the system's; none at all means
/// defaults everywhere.
fn load_setup_config(options: &Options) -> Result<(Option<PathBuf>, ConfFile), SetupError> {
    let path = match &options.config {
        Some(path) => Some(path.clone()),
        None => userconf::find_config(userconf::SETUP_CONF),
    };
    let Some(path) = path else {
        return Ok((None, ConfFile::default()));
    };
    let text = std::fs::read_to_string(&path).map_err(|source| SetupError::Config {
        path: path.clone(),
        source,
    })?;
    let conf = ConfFile::parse(&text, |name| std::env::var(name).ok());
    Ok((Some(path), conf))
}

/// The daemon's `--key` value for encrypted state.
fn key_option(
    options: &Options,
    caps: &Capabilities,
    program: &TpmProgram,
) -> Result<Option<String>, SetupError> {
    let mode = options.cipher.unwrap_or(options::Cipher::Aes128Cbc).mode();
    let need = |feature: &str| -> Result<(), SetupError> {
        if caps.has(feature) {
            Ok(())
        } else {
            Err(invalid(format!(
                "the TPM daemon '{}' cannot take its state key from a file descriptor (its capabilities lack '{feature}')",
                program.command_line()
            )))
        }
    };
    Ok(if let Some(path) = &options.keyfile {
        Some(format!("file={},mode={mode}", path.display()))
    } else if let Some(fd) = options.keyfile_fd {
        need("cmdarg-key-fd")?;
        Some(format!("fd={fd},mode={mode}"))
    } else if let Some(path) = &options.pwdfile {
        Some(format!("pwdfile={},mode={mode}", path.display()))
    } else if let Some(fd) = options.pwdfile_fd {
        need("cmdarg-pwd-fd")?;
        Some(format!("pwdfd={fd},mode={mode}"))
    } else {
        None
    })
}

fn rsa_bits(options: &Options, conf: &ConfFile, caps: &Capabilities) -> Result<u32, SetupError> {
    let size = match options.rsa_keysize {
        Some(size) => size,
        None => match conf.get("rsa_keysize") {
            Some(text) => options::rsa_keysize(text)
                .map_err(|err| invalid(format!("swtpm_setup.conf: {err}")))?,
            None => RsaKeySize::Bits(2048),
        },
    };
    let supported: Vec<u32> = caps
        .rsa_key_sizes()
        .into_iter()
        .filter(|bits| *bits >= 2048)
        .collect();
    match size {
        RsaKeySize::Max => Ok(supported
            .iter()
            .copied()
            .filter(|b| *b <= 3072)
            .max()
            .unwrap_or(2048)),
        RsaKeySize::Bits(2048) => Ok(2048),
        RsaKeySize::Bits(3072) if supported.contains(&3072) => Ok(3072),
        RsaKeySize::Bits(bits) => Err(invalid(format!(
            "--rsa-keysize {bits} is not possible: use 2048{}",
            if supported.contains(&3072) {
                ", 3072 or max"
            } else {
                " (the TPM daemon supports no larger keys)"
            }
        ))),
    }
}

fn certificate_maker(
    options: &Options,
    conf: &ConfFile,
    config_path: Option<&Path>,
    log: &mut SetupLog,
) -> Result<CertificateMaker, SetupError> {
    let tool_config = conf
        .get("create_certs_tool_config")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let tool_options = conf
        .get("create_certs_tool_options")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let tool = conf
        .get("create_certs_tool")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    // swtpm_localca is what the built-in CA replaces; any other tool is run as before.
    let builtin = tool
        .as_deref()
        .is_none_or(|tool| tool.file_name().is_some_and(|name| name == "swtpm_localca"));
    if !builtin {
        return Ok(CertificateMaker::External(ExternalTool {
            tool: tool.unwrap_or_default(),
            config: tool_config,
            options: tool_options,
            logfile: options.logfile.clone(),
        }));
    }
    let ca_config = tool_config
        .or_else(|| userconf::find_config(userconf::LOCALCA_CONF))
        .ok_or_else(|| {
            invalid(format!(
                "no configuration for the local CA: {} names no create_certs_tool_config and there is no {} in the user's configuration directory or {}; run 'swtpm_setup --create-config-files' or write one",
                config_path.map_or_else(|| "swtpm_setup.conf (none found)".to_string(), |p| p.display().to_string()),
                userconf::LOCALCA_CONF,
                userconf::SYSCONFDIR
            ))
        })?;
    let ca_options = tool_options.or_else(|| userconf::find_config(userconf::LOCALCA_OPTIONS));
    match BuiltinCa::open(&ca_config, ca_options.as_deref(), log) {
        Ok(ca) => Ok(CertificateMaker::Builtin(Box::new(ca))),
        // A CA whose key sits in a PKCS#11 token or a TPM keeps working through the
        // installed swtpm_localca, which can use such keys.
        Err(CertError::Ca {
            source: CaError::UnsupportedKey { uri, .. },
            ..
        }) if tool
            .as_deref()
            .is_some_and(|tool| certs::resolve_tool(tool).is_ok()) =>
        {
            let tool = tool.unwrap_or_default();
            log.info(&format!(
                "The local CA's signing key '{uri}' is not a file; {} issues the certificates.",
                tool.display()
            ));
            Ok(CertificateMaker::External(ExternalTool {
                tool,
                config: Some(ca_config),
                options: ca_options,
                logfile: options.logfile.clone(),
            }))
        }
        Err(err) => Err(err.into()),
    }
}

/// The current time as `2026-11-25 15:51:05 UTC`.
fn now_text() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (year, month, day) = crate::localca::profile::civil_from_days(now.div_euclid(86_400));
    let secs = now.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn run(options: &Options, log: &mut SetupLog) -> Result<(), SetupError> {
    validate(options)?;
    let state_option = options
        .tpm_state
        .as_deref()
        .ok_or_else(|| invalid("--tpm-state <dir> is mandatory"))?;
    let location = StateLocation::parse(state_option)?;
    let (config_path, conf) = load_setup_config(options)?;
    let program = TpmProgram::new(options.tpm.as_deref())?;
    let logfile = options.logfile.as_deref();

    let caps = program.capabilities(false, logfile)?;
    let wanted = if options.tpm2 { "tpm-2.0" } else { "tpm-1.2" };
    if caps
        .features
        .iter()
        .any(|f| f.starts_with("tpm-1") || f.starts_with("tpm-2"))
        && !caps.has(wanted)
    {
        return Err(invalid(format!(
            "the TPM daemon '{}' does not offer {wanted}",
            program.command_line()
        )));
    }
    let caps2 = if options.tpm2 {
        program.capabilities(true, logfile)?
    } else {
        caps.clone()
    };
    let key = key_option(options, &caps, &program)?;
    let rsa_bits = if options.tpm2 {
        rsa_bits(options, &conf, &caps2)?
    } else {
        2048
    };
    let pcr_banks: Option<Vec<String>> = {
        let text = options
            .pcr_banks
            .clone()
            .or_else(|| conf.get("active_pcr_banks").map(str::to_string))
            .unwrap_or_else(|| "sha256".into());
        if text.split(',').any(|bank| bank == "-") {
            None
        } else {
            Some(
                text.split(',')
                    .filter(|b| !b.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        }
    };
    if let Some(dir) = &options.write_ek_cert_files
        && !dir.is_dir()
    {
        return Err(invalid(format!(
            "--write-ek-cert-files {}: no such directory",
            dir.display()
        )));
    }
    location.check_writable()?;

    log.info(&format!(
        "Starting vTPM manufacturing as {} @ {}",
        current_user(),
        now_text()
    ));
    let exists = program.has_state(&location.uri(), options.tpm2, logfile)?;
    if options.reconfigure {
        if !exists {
            return Err(SetupError::NoState(state_option.to_string()));
        }
    } else if exists {
        if options.not_overwrite {
            log.info("The TPM state exists already; leaving it as it is (--not-overwrite).");
            return Ok(());
        }
        if !options.overwrite {
            return Err(SetupError::StateExists(state_option.to_string()));
        }
        location.delete()?;
    }

    let ek_cert = options.create_ek_cert;
    let platform_cert = options.create_platform_cert;
    let create_ek = options.createek || ek_cert || platform_cert || options.take_ownership;
    let certs = if ek_cert || platform_cert {
        Some(certificate_maker(
            options,
            &conf,
            config_path.as_deref(),
            log,
        )?)
    } else {
        None
    };

    let run_options = RunOptions {
        state_uri: &location.uri(),
        lock: caps.has("tpmstate-opt-lock"),
        tpm2: options.tpm2,
        key,
        logfile,
    };
    let result = manufacture(
        &program,
        &run_options,
        options,
        certs.as_ref(),
        create_ek,
        rsa_bits,
        pcr_banks,
        log,
    );
    match result {
        Ok(made) => {
            if options.display {
                display(&made, log);
            }
            log.info(if options.reconfigure {
                "Reconfigured the TPM state."
            } else {
                "Successfully manufactured the TPM state."
            });
            log.info(&format!("Ending vTPM manufacturing @ {}", now_text()));
            Ok(())
        }
        // A failed reconfiguration leaves the VM's existing TPM (and its keys) alone.
        Err(err) if options.reconfigure => Err(err),
        Err(err) => {
            if let Err(remove) = location.delete() {
                log.error(&format!("swtpm_setup: {}", chain(&remove)));
            }
            Err(SetupError::Failed(Box::new(err)))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn manufacture(
    program: &TpmProgram,
    run_options: &RunOptions,
    options: &Options,
    certs: Option<&CertificateMaker>,
    create_ek: bool,
    rsa_bits: u32,
    pcr_banks: Option<Vec<String>>,
    log: &mut SetupLog,
) -> Result<Made, SetupError> {
    let mut tpm = program.start(run_options)?;
    let made = if options.reconfigure {
        manufacture::reconfigure_tpm2(&mut tpm, pcr_banks.as_deref(), log)?;
        Made::default()
    } else if options.tpm2 {
        let plan = Tpm2Plan {
            create_ek,
            allow_signing: options.allow_signing,
            decryption: options.decryption,
            create_spk: options.create_spk,
            ecc_spk: options.ecc,
            ek_cert: options.create_ek_cert,
            platform_cert: options.create_platform_cert,
            lock_nvram: options.lock_nvram,
            rsa_bits,
            pcr_banks,
            write_ek_cert_files: options.write_ek_cert_files.as_deref(),
            vmid: options.vmid.as_deref(),
        };
        manufacture::manufacture_tpm2(&mut tpm, &plan, certs, log)?
    } else {
        let well_known = [0u8; 20];
        let owner: &[u8] = match (&options.ownerpass, options.owner_well_known) {
            (_, true) => &well_known,
            (Some(pass), false) => pass.as_bytes(),
            (None, false) => b"ooo",
        };
        let srk: &[u8] = match (&options.srkpass, options.srk_well_known) {
            (_, true) => &well_known,
            (Some(pass), false) => pass.as_bytes(),
            (None, false) => b"sss",
        };
        let plan = Tpm12Plan {
            create_ek,
            take_ownership: options.take_ownership,
            owner_password: owner,
            srk_password: srk,
            ek_cert: options.create_ek_cert,
            platform_cert: options.create_platform_cert,
            lock_nvram: options.lock_nvram,
            write_ek_cert_files: options.write_ek_cert_files.as_deref(),
            vmid: options.vmid.as_deref(),
        };
        manufacture::manufacture_tpm12(&mut tpm, &plan, certs, log)?
    };
    tpm.shutdown()?;
    Ok(made)
}

/// `--display`: what this run put into the TPM.
fn display(made: &Made, log: &mut SetupLog) {
    for (handle, what) in &made.handles {
        log.info(&format!("  persistent handle {handle:#010x}: {what}"));
    }
    for (index, what) in &made.nv_indices {
        log.info(&format!("  NV index {index:#010x}: {what}"));
    }
}
