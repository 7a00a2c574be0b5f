//! The command line and environment of `swtpm_bios` → what to send where (cli.md §13).
//! Pure: the environment comes in as [`Environment`].
//!
//! swtpm_bios scans with `getopt_long_only` too, but unlike swtpm_ioctl it stops at the
//! first bad option (message on stderr, usage on stdout, exit 1), and `-v` has no handler
//! of its own: it prints the usage and exits 1. `-c`, `-s`, `-d`, `-n` and `-o` each set
//! part of the start-up plan where they stand, so the last one wins.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::DEFAULT_PORT;
use crate::tools::getopt::{Arg, Event, LongOption, Scanner, Value};
use crate::tools::target::{self, PortError, Target, TcpTarget};

const DEFAULT_PROGRAM: &str = "swtpm_bios";
/// The device without `--tpm-device` and `TPM_DEVICE`.
const DEFAULT_DEVICE: &str = "/dev/tpm0";
/// The host of `TCSD_USE_TCP_DEVICE` without `TCSD_TCP_DEVICE_HOSTNAME`.
const DEFAULT_TCSD_HOST: &str = "localhost";

/// The environment variables swtpm_bios reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// `TPM_DEVICE`.
    pub tpm_device: Option<OsString>,
    /// Whether `TCSD_USE_TCP_DEVICE` is set (to anything, even empty).
    pub tcsd_use_tcp: bool,
    /// `TCSD_TCP_DEVICE_HOSTNAME`.
    pub tcsd_host: Option<OsString>,
    /// `TCSD_TCP_DEVICE_PORT`.
    pub tcsd_port: Option<OsString>,
}

impl Environment {
    pub fn of_process() -> Environment {
        Environment {
            tpm_device: std::env::var_os("TPM_DEVICE"),
            tcsd_use_tcp: std::env::var_os("TCSD_USE_TCP_DEVICE").is_some(),
            tcsd_host: std::env::var_os("TCSD_TCP_DEVICE_HOSTNAME"),
            tcsd_port: std::env::var_os("TCSD_TCP_DEVICE_PORT"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `-h`: usage on stdout, exit 0.
    Help,
    /// A bad option (getopt's message for stderr, if any): usage on stdout, exit 1.
    Usage(Option<String>),
    /// Exit 1 with this message on stderr.
    Refused(ArgsError),
    Run(Plan),
}

/// Which TPM_Startup to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    Clear,
    State,
    /// TPM 1.2 only; a TPM 2 gets no Startup.
    Deactivated,
    None,
}

/// What to send, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub target: Target,
    pub tpm2: bool,
    pub startup: Startup,
    /// TPM 1.2: assert physical presence, enable and activate after Startup.
    pub more: bool,
    /// `-cs`.
    pub self_test: bool,
    /// `-ea` (TPM 1.2).
    pub ensure_activated: bool,
    /// `-u`: give up physical presence (TPM 1.2) / set the platform auth (TPM 2).
    pub unassert_pp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("TCSD_TCP_DEVICE_PORT: {0}")]
    EnvPort(PortError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    TpmDevice,
    Tcp,
    Unix,
    Tpm2,
    Clear,
    ContinueSelfTest,
    Deactivated,
    EnsureActivated,
    Help,
    NoStartup,
    StartupOnly,
    State,
    Unassert,
    Version,
}

const fn opt(name: &'static str, arg: Arg, id: Opt) -> LongOption<Opt> {
    LongOption::new(name, arg, id)
}

/// swtpm_bios' options, in its order (getopt lists ambiguous candidates in this order).
#[rustfmt::skip]
const OPTIONS: &[LongOption<Opt>] = &[
    opt("tpm-device", Arg::Required, Opt::TpmDevice),
    opt("tcp",        Arg::Required, Opt::Tcp),
    opt("unix",       Arg::Required, Opt::Unix),
    opt("tpm2",       Arg::None,     Opt::Tpm2),
    opt("c",          Arg::None,     Opt::Clear),
    opt("cs",         Arg::None,     Opt::ContinueSelfTest),
    opt("d",          Arg::None,     Opt::Deactivated),
    opt("ea",         Arg::None,     Opt::EnsureActivated),
    opt("h",          Arg::None,     Opt::Help),
    opt("n",          Arg::None,     Opt::NoStartup),
    opt("o",          Arg::None,     Opt::StartupOnly),
    opt("s",          Arg::None,     Opt::State),
    opt("u",          Arg::None,     Opt::Unassert),
    opt("v",          Arg::None,     Opt::Version),
];

pub fn program_name(argv: &[OsString]) -> String {
    argv.first().map_or_else(
        || DEFAULT_PROGRAM.to_owned(),
        |p| p.to_string_lossy().into_owned(),
    )
}

/// Parses the whole argv (`argv[0]` included) with the given environment.
pub fn parse(argv: &[OsString], env: &Environment) -> Outcome {
    let program = program_name(argv);
    let words: Vec<&OsStr> = argv.iter().skip(1).map(OsString::as_os_str).collect();
    let mut device: Option<PathBuf> = None;
    let mut tcp: Option<TcpTarget> = None;
    let mut unix: Option<PathBuf> = None;
    let mut plan = Plan {
        target: Target::Device(DEFAULT_DEVICE.into()),
        tpm2: false,
        startup: Startup::Clear,
        more: true,
        self_test: false,
        ensure_activated: false,
        unassert_pp: false,
    };
    for event in Scanner::new(&program, OPTIONS, &words) {
        let (id, value) = match event {
            // Surplus words are ignored.
            Event::Operand(_) => continue,
            Event::Error(message) => return Outcome::Usage(Some(message)),
            Event::Option { id, value, .. } => (id, value.map(Value::text).unwrap_or_default()),
        };
        match id {
            Opt::TpmDevice => device = Some(value.into()),
            Opt::Tcp => match target::parse_tcp(&value.to_string_lossy(), DEFAULT_PORT) {
                Ok(target) => tcp = Some(target),
                Err(err) => return Outcome::Refused(err.into()),
            },
            Opt::Unix => unix = Some(value.into()),
            Opt::Tpm2 => plan.tpm2 = true,
            Opt::Clear => (plan.startup, plan.more) = (Startup::Clear, true),
            Opt::State => (plan.startup, plan.more) = (Startup::State, true),
            Opt::Deactivated => (plan.startup, plan.more) = (Startup::Deactivated, false),
            Opt::NoStartup => (plan.startup, plan.more) = (Startup::None, true),
            Opt::StartupOnly => plan.more = false,
            Opt::ContinueSelfTest => plan.self_test = true,
            Opt::EnsureActivated => plan.ensure_activated = true,
            Opt::Unassert => plan.unassert_pp = true,
            Opt::Help => return Outcome::Help,
            Opt::Version => return Outcome::Usage(None),
        }
    }
    plan.target = match (device, tcp, unix) {
        (Some(device), _, _) => Target::Device(device),
        (None, Some(tcp), _) => Target::Tcp(tcp),
        (None, None, Some(path)) => Target::Unix(path),
        (None, None, None) => match target_from_env(env) {
            Ok(target) => target,
            Err(err) => return Outcome::Refused(err),
        },
    };
    Outcome::Run(plan)
}

/// No target option: `TCSD_USE_TCP_DEVICE` selects TCP, else `TPM_DEVICE` or /dev/tpm0.
fn target_from_env(env: &Environment) -> Result<Target, ArgsError> {
    if !env.tcsd_use_tcp {
        let device = env
            .tpm_device
            .clone()
            .unwrap_or_else(|| DEFAULT_DEVICE.into());
        return Ok(Target::Device(device.into()));
    }
    let host = env.tcsd_host.as_ref().map_or_else(
        || DEFAULT_TCSD_HOST.to_owned(),
        |h| h.to_string_lossy().into_owned(),
    );
    // swtpm_bios reads the port with atoi and cuts it to 16 bits, so that `abc` is port 0
    // and 70000 is 4464; we refuse such values.
    let port = match &env.tcsd_port {
        Some(text) => target::parse_port(&text.to_string_lossy()).map_err(ArgsError::EnvPort)?,
        None => DEFAULT_PORT,
    };
    Ok(Target::Tcp(TcpTarget { host, port }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(words: &[&str], env: &Environment) -> Outcome {
        let argv: Vec<OsString> = std::iter::once("swtpm_bios")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect();
        parse(&argv, env)
    }

    fn plan(words: &[&str]) -> Plan {
        match parse_with(words, &Environment::default()) {
            Outcome::Run(plan) => plan,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let plan = plan(&[]);
        assert_eq!(plan.target, Target::Device("/dev/tpm0".into()));
        assert_eq!(
            (plan.tpm2, plan.startup, plan.more),
            (false, Startup::Clear, true)
        );
        assert!(!plan.self_test && !plan.ensure_activated && !plan.unassert_pp);
    }

    #[test]
    fn last_startup_option_wins() {
        let p = plan(&["-o", "-c"]);
        assert_eq!((p.startup, p.more), (Startup::Clear, true));
        let p = plan(&["-c", "-o"]);
        assert_eq!((p.startup, p.more), (Startup::Clear, false));
        let p = plan(&["-d", "-n"]);
        assert_eq!((p.startup, p.more), (Startup::None, true));
        let p = plan(&["-n", "-d"]);
        assert_eq!((p.startup, p.more), (Startup::Deactivated, false));
        let p = plan(&["-s", "-cs", "-ea", "-u", "--tpm2", "extra"]);
        assert_eq!((p.startup, p.more), (Startup::State, true));
        assert!(p.self_test && p.ensure_activated && p.unassert_pp && p.tpm2);
        // Single-dash long options and prefixes, as getopt_long_only.
        let p = plan(&["-e", "--tpm2"]);
        assert!(p.ensure_activated && p.tpm2);
    }

    #[test]
    fn bad_options_show_usage() {
        let env = Environment::default();
        assert_eq!(
            parse_with(&["-x", "-h"], &env),
            Outcome::Usage(Some("swtpm_bios: unrecognized option '-x'".into()))
        );
        assert_eq!(parse_with(&["-h", "-x"], &env), Outcome::Help);
        assert_eq!(parse_with(&["-v"], &env), Outcome::Usage(None));
        assert_eq!(
            parse_with(&["--help"], &env),
            Outcome::Usage(Some("swtpm_bios: unrecognized option '--help'".into()))
        );
        assert_eq!(
            parse_with(&["--tpm"], &env),
            Outcome::Usage(Some(
                "swtpm_bios: option '--tpm' is ambiguous; possibilities: '--tpm-device' '--tpm2'"
                    .into()
            ))
        );
        assert_eq!(
            parse_with(&["--tcp", ":abc"], &env),
            Outcome::Refused(ArgsError::Port(PortError::Invalid("abc".into())))
        );
    }

    #[test]
    fn never_panics_on_any_pair_of_words() {
        let vocabulary = [
            "-c",
            "-cs",
            "-e",
            "-t",
            "--tcp",
            ":",
            "h:",
            "--unix",
            "--tpm-device",
            "-",
            "--",
            "",
            "=",
            "-=",
            "--tpm2=1",
            "-x",
            "-h",
            "-v",
        ];
        for first in vocabulary {
            for second in vocabulary {
                for third in vocabulary {
                    let _ = parse_with(&[first, second, third], &Environment::default());
                }
            }
        }
        assert!(matches!(
            parse(&[], &Environment::default()),
            Outcome::Run(_)
        ));
    }

    #[test]
    fn targets() {
        let tcp = |host: &str, port| {
            Target::Tcp(TcpTarget {
                host: host.into(),
                port,
            })
        };
        assert_eq!(plan(&["--tcp", ":"]).target, tcp("127.0.0.1", 6545));
        assert_eq!(
            plan(&["--tcp", ":1", "--unix", "/s"]).target,
            tcp("127.0.0.1", 1)
        );
        assert_eq!(
            plan(&["--unix", "/s", "--tpm-device", "/d"]).target,
            Target::Device("/d".into())
        );
        assert_eq!(plan(&["--unix", "/s"]).target, Target::Unix("/s".into()));
        let mut env = Environment {
            tpm_device: Some("/dev/x".into()),
            ..Environment::default()
        };
        assert_eq!(
            match parse_with(&[], &env) {
                Outcome::Run(p) => p.target,
                other => panic!("{other:?}"),
            },
            Target::Device("/dev/x".into())
        );
        env.tcsd_use_tcp = true;
        env.tcsd_port = Some("17331x".into());
        let Outcome::Run(p) = parse_with(&[], &env) else {
            panic!()
        };
        assert_eq!(p.target, tcp("localhost", 17331));
        let Outcome::Run(p) = parse_with(&["--unix", "/s"], &env) else {
            panic!()
        };
        assert_eq!(p.target, Target::Unix("/s".into()));
        env.tcsd_port = Some("abc".into());
        assert_eq!(
            parse_with(&[], &env),
            Outcome::Refused(ArgsError::EnvPort(PortError::Invalid("abc".into())))
        );
    }
}
