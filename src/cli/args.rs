//! The `swtpm` command line → [`Invocation`] (cli.md §1, §4.3–§4.6, §5.1, §6a).
//!
//! clap splits the words (long-option prefixes, `--name=value`, clustered short flags,
//! attached values). Around it sits what getopt-driven swtpm does and clap does not:
//! some options act where they stand on the command line (`-h`, and the values of `-p`,
//! `-f` and `--print-info`, which are checked as they are met), and the options before a
//! bad one still act (`--help --bogus` prints help). For that every occurrence of those
//! options is kept with its position, and after a clap error the words before the error
//! are looked at again.

use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::builder::OsStringValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::options::{Radix, parse_c_integer};
use super::{CliError, DataArg, Frontend, FrontendArgs, Invocation, help};

/// The program name when argv is empty.
const DEFAULT_PROGRAM: &str = "swtpm";
/// clap's name for the words that are not options (`Unknown parameter`).
const LEFTOVERS: &str = "leftovers";

/// Parses the whole argv of `swtpm`, `argv[0]` included (help texts show it).
pub fn parse<S: AsRef<OsStr>>(argv: &[S]) -> Result<Invocation, CliError> {
    let program = argv
        .first()
        .map_or_else(|| DEFAULT_PROGRAM.to_owned(), |name| lossy(name.as_ref()));
    let Some(interface) = argv.get(1).map(AsRef::as_ref) else {
        return Err(CliError::Invalid("Missing TPM interface type.".into()));
    };
    let words: Vec<&OsStr> = argv[2..].iter().map(AsRef::as_ref).collect();
    // Only the first word is looked at here; anything after -h or -v is ignored.
    match interface.to_str() {
        Some("socket") => FrontendParser::new(Frontend::Socket, &program).parse(&words),
        Some("chardev") => FrontendParser::new(Frontend::Chardev, &program).parse(&words),
        Some("-h" | "--help") => Ok(Invocation::Help(help::usage(&program))),
        Some("-v" | "--version") => Ok(Invocation::Version),
        Some("cuse") => Err(CliError::Invalid(
            "The CUSE interface is not supported by this build; use 'socket' or 'chardev'.".into(),
        )),
        _ => Err(CliError::Usage {
            message: format!("Unsupported TPM interface type '{}'.", lossy(interface)),
            usage: help::usage(&program),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// The options of the front ends
// ---------------------------------------------------------------------------------------

/// Options without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlagOpt {
    Terminate,
    Daemon,
    Tpm2,
    VtpmProxy,
    PrintCapabilities,
    PrintStates,
    PrintProfiles,
}

/// Options whose value is only stored (the last one given counts) and parsed later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoredOpt {
    Ctrl,
    TpmState,
    Log,
    Pid,
    Locality,
    Flags,
    Key,
    MigrationKey,
    Migration,
    RunAs,
    Chroot,
    Seccomp,
    Profile,
}

/// Options that act where they stand on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InOrderOpt {
    /// Prints help when reached.
    Help,
    /// Checked when reached; the last of `-p` and `--server` wins.
    Port,
    Server,
    /// Checked when reached (fstat). Socket: the last wins; chardev: the first of `-f`
    /// and `-c` wins and later ones are ignored unchecked.
    Fd,
    Chardev,
    /// Checked when reached; the last wins.
    PrintInfo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Flag(FlagOpt),
    Stored(StoredOpt),
    InOrder(InOrderOpt),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Availability {
    Both,
    SocketOnly,
    ChardevOnly,
}

struct OptionSpec {
    /// `--long`, as shown in messages and recorded in `not_yet_supported`.
    name: &'static str,
    short: Option<char>,
    kind: Kind,
    availability: Availability,
}

impl OptionSpec {
    fn long(&self) -> &'static str {
        self.name.trim_start_matches('-')
    }

    fn available_in(&self, frontend: Frontend) -> bool {
        match self.availability {
            Availability::Both => true,
            Availability::SocketOnly => frontend == Frontend::Socket,
            Availability::ChardevOnly => frontend == Frontend::Chardev,
        }
    }

    fn clap_arg(&self) -> Arg {
        let arg = Arg::new(self.long()).long(self.long());
        let arg = match self.short {
            Some(short) => arg.short(short),
            None => arg,
        };
        match self.kind {
            Kind::Flag(_) => arg.action(ArgAction::SetTrue),
            // Every occurrence with its position, so that help acts at the first one.
            Kind::InOrder(InOrderOpt::Help) => arg
                .action(ArgAction::Append)
                .num_args(0)
                .default_missing_value(""),
            Kind::InOrder(_) => with_value(arg.action(ArgAction::Append)),
            Kind::Stored(_) => with_value(arg.action(ArgAction::Set)),
        }
    }
}

/// A required value, taken from the next word even if it starts with `-` (as getopt does).
fn with_value(arg: Arg) -> Arg {
    arg.num_args(1)
        .allow_hyphen_values(true)
        .value_parser(OsStringValueParser::new())
}

const fn option(
    name: &'static str,
    short: Option<char>,
    kind: Kind,
    availability: Availability,
) -> OptionSpec {
    OptionSpec {
        name,
        short,
        kind,
        availability,
    }
}

/// Every option of swtpm 0.10.2's `socket` and `chardev` front ends.
#[rustfmt::skip]
const OPTIONS: &[OptionSpec] = {
    use Availability::{Both, ChardevOnly, SocketOnly};
    use Kind::{Flag, InOrder, Stored};
    &[
        option("--port",               Some('p'), InOrder(InOrderOpt::Port),         SocketOnly),
        option("--server",             None,      InOrder(InOrderOpt::Server),       SocketOnly),
        option("--fd",                 Some('f'), InOrder(InOrderOpt::Fd),           Both),
        option("--chardev",            Some('c'), InOrder(InOrderOpt::Chardev),      ChardevOnly),
        option("--print-info",         None,      InOrder(InOrderOpt::PrintInfo),    Both),
        option("--help",               Some('h'), InOrder(InOrderOpt::Help),         Both),
        option("--terminate",          Some('t'), Flag(FlagOpt::Terminate),          SocketOnly),
        option("--daemon",             Some('d'), Flag(FlagOpt::Daemon),             Both),
        option("--tpm2",               None,      Flag(FlagOpt::Tpm2),               Both),
        option("--vtpm-proxy",         None,      Flag(FlagOpt::VtpmProxy),          ChardevOnly),
        option("--print-capabilities", None,      Flag(FlagOpt::PrintCapabilities),  Both),
        option("--print-states",       None,      Flag(FlagOpt::PrintStates),        Both),
        option("--print-profiles",     None,      Flag(FlagOpt::PrintProfiles),      Both),
        option("--ctrl",               None,      Stored(StoredOpt::Ctrl),           Both),
        option("--tpmstate",           None,      Stored(StoredOpt::TpmState),       Both),
        option("--log",                None,      Stored(StoredOpt::Log),            Both),
        option("--pid",                None,      Stored(StoredOpt::Pid),            Both),
        option("--locality",           None,      Stored(StoredOpt::Locality),       Both),
        option("--flags",              None,      Stored(StoredOpt::Flags),          Both),
        option("--key",                None,      Stored(StoredOpt::Key),            Both),
        option("--migration-key",      None,      Stored(StoredOpt::MigrationKey),   Both),
        option("--migration",          None,      Stored(StoredOpt::Migration),      Both),
        option("--runas",              Some('r'), Stored(StoredOpt::RunAs),          Both),
        option("--chroot",             Some('R'), Stored(StoredOpt::Chroot),         Both),
        option("--seccomp",            None,      Stored(StoredOpt::Seccomp),        Both),
        option("--profile",            None,      Stored(StoredOpt::Profile),        Both),
    ]
};

fn options_of(frontend: Frontend) -> impl Iterator<Item = &'static OptionSpec> {
    OPTIONS
        .iter()
        .filter(move |spec| spec.available_in(frontend))
}

fn command(frontend: Frontend) -> Command {
    let leftovers = Arg::new(LEFTOVERS)
        .action(ArgAction::Append)
        .num_args(1)
        .value_parser(OsStringValueParser::new());
    options_of(frontend).fold(
        Command::new(frontend.name())
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true)
            .infer_long_args(true)
            .args_override_self(true)
            .arg(leftovers),
        |command, spec| command.arg(spec.clap_arg()),
    )
}

// ---------------------------------------------------------------------------------------
// Parsing one front end's options
// ---------------------------------------------------------------------------------------

struct FrontendParser<'p> {
    frontend: Frontend,
    program: &'p str,
}

impl<'p> FrontendParser<'p> {
    fn new(frontend: Frontend, program: &'p str) -> Self {
        FrontendParser { frontend, program }
    }

    fn parse(&self, words: &[&OsStr]) -> Result<Invocation, CliError> {
        let error = match command(self.frontend).try_get_matches_from(words) {
            Ok(matches) => return self.complete(&matches),
            Err(error) => error,
        };
        // The options before the bad word act first, as they do under getopt: a help or
        // a bad -p/-f/--print-info value there is what the user gets.
        let before_error = command(self.frontend)
            .ignore_errors(true)
            .try_get_matches_from(words);
        if let Ok(before_error) = before_error {
            let mut ignored = FrontendArgs::default();
            if let Some(help) = self.act_in_order(&before_error, &mut ignored)? {
                return Ok(help);
            }
        }
        Err(self.usage_error(&error, words))
    }

    fn complete(&self, matches: &ArgMatches) -> Result<Invocation, CliError> {
        let mut args = FrontendArgs {
            frontend: Some(self.frontend),
            ..FrontendArgs::default()
        };
        if let Some(help) = self.act_in_order(matches, &mut args)? {
            return Ok(help);
        }
        for spec in options_of(self.frontend) {
            match spec.kind {
                Kind::Flag(flag) if flag_given(matches, spec) => set_flag(&mut args, spec, flag),
                Kind::Stored(stored) => {
                    if let Some(value) = last_value(matches, spec) {
                        store(&mut args, spec, stored, utf8_value(spec, value)?);
                    }
                }
                Kind::Flag(_) | Kind::InOrder(_) => {}
            }
        }
        if let Some(word) = first_leftover(matches) {
            return Err(CliError::Invalid(format!(
                "Unknown parameter '{}'",
                lossy(word)
            )));
        }
        if args.vtpm_proxy && has_device(&args) {
            return Err(CliError::Invalid(
                "Cannot use vTPM proxy with a provided device.".into(),
            ));
        }
        Ok(Invocation::Run(args))
    }

    /// Goes through the in-order options in command-line order. Returns the help text if
    /// `-h` is reached.
    fn act_in_order(
        &self,
        matches: &ArgMatches,
        args: &mut FrontendArgs,
    ) -> Result<Option<Invocation>, CliError> {
        for (spec, opt, value) in self.in_order_occurrences(matches) {
            match opt {
                InOrderOpt::Help => {
                    let text = help::frontend_help(self.frontend, self.program);
                    return Ok(Some(Invocation::Help(text)));
                }
                InOrderOpt::Port => args.server = Some(DataArg::Port(parse_port(value)?)),
                InOrderOpt::Server => {
                    args.server = Some(DataArg::Server(utf8_value(spec, value)?));
                }
                InOrderOpt::Fd => self.take_fd(args, value)?,
                InOrderOpt::Chardev if !has_device(args) => {
                    args.chardev = Some(PathBuf::from(value));
                }
                InOrderOpt::Chardev => {}
                InOrderOpt::PrintInfo => args.print_info = parse_print_info(value)?,
            }
        }
        Ok(None)
    }

    /// Every occurrence of the in-order options, sorted by position.
    fn in_order_occurrences<'m>(
        &self,
        matches: &'m ArgMatches,
    ) -> Vec<(&'static OptionSpec, InOrderOpt, &'m OsStr)> {
        let mut occurrences = Vec::new();
        for spec in options_of(self.frontend) {
            let Kind::InOrder(opt) = spec.kind else {
                continue;
            };
            let (Some(indices), Ok(Some(values))) = (
                matches.indices_of(spec.long()),
                matches.try_get_raw(spec.long()),
            ) else {
                continue;
            };
            occurrences.extend(
                indices
                    .zip(values)
                    .map(|(index, value)| (index, spec, opt, value)),
            );
        }
        occurrences.sort_by_key(|(index, ..)| *index);
        occurrences
            .into_iter()
            .map(|(_, spec, opt, value)| (spec, opt, value))
            .collect()
    }

    fn take_fd(&self, args: &mut FrontendArgs, value: &OsStr) -> Result<(), CliError> {
        match self.frontend {
            Frontend::Socket => {
                args.fd = Some(parse_data_fd(
                    value,
                    "Cannot parse socket file descriptor.",
                )?);
            }
            Frontend::Chardev if !has_device(args) => {
                let fd = parse_data_fd(value, "Cannot parse character device file descriptor.")?;
                args.fd = Some(fd);
            }
            Frontend::Chardev => {}
        }
        Ok(())
    }

    fn usage_error(&self, error: &clap::Error, words: &[&OsStr]) -> CliError {
        CliError::Usage {
            message: format!("{}: {}", self.frontend.name(), self.describe(error, words)),
            usage: help::frontend_help(self.frontend, self.program),
        }
    }

    /// A clap error in getopt's words, which scripts and people know from swtpm.
    fn describe(&self, error: &clap::Error, words: &[&OsStr]) -> String {
        let offending = match error.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => arg.as_str(),
            _ => "",
        };
        match error.kind() {
            ErrorKind::UnknownArgument => self.describe_unknown(offending, words),
            ErrorKind::TooManyValues => format!("option '{offending}' doesn't allow an argument"),
            // The only value clap refuses is a missing one: any word is accepted.
            ErrorKind::InvalidValue => self.describe_missing_value(offending, words),
            _ => clap_text(error),
        }
    }

    fn describe_unknown(&self, offending: &str, words: &[&OsStr]) -> String {
        let Some(long) = offending.strip_prefix("--") else {
            let short = offending.strip_prefix('-').unwrap_or(offending);
            return format!("invalid option -- '{short}'");
        };
        // clap names the option without its `=value`; getopt shows the word as written.
        let written = words
            .iter()
            .map(|word| word.to_string_lossy())
            .find(|word| {
                word.strip_prefix(offending)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
            })
            .map_or_else(|| offending.to_owned(), |word| word.into_owned());
        let candidates: Vec<&str> = options_of(self.frontend)
            .filter(|spec| !long.is_empty() && spec.long().starts_with(long))
            .map(|spec| spec.name)
            .collect();
        if candidates.len() > 1 {
            let listed: Vec<String> = candidates.iter().map(|name| format!("'{name}'")).collect();
            format!(
                "option '{written}' is ambiguous; possibilities: {}",
                listed.join(" ")
            )
        } else {
            format!("unrecognized option '{written}'")
        }
    }

    /// `offending` is clap's rendering, e.g. `--port <port>`; the last word tells whether
    /// the option was written long or short.
    fn describe_missing_value(&self, offending: &str, words: &[&OsStr]) -> String {
        let rendered = offending.split(' ').next().unwrap_or_default();
        let spec = options_of(self.frontend).find(|spec| spec.name == rendered);
        let written_long = words
            .last()
            .is_some_and(|word| word.to_string_lossy().starts_with("--"));
        match spec {
            Some(OptionSpec {
                short: Some(short), ..
            }) if !written_long => {
                format!("option requires an argument -- '{short}'")
            }
            Some(spec) => format!("option '{}' requires an argument", spec.name),
            None => format!("option '{rendered}' requires an argument"),
        }
    }
}

fn flag_given(matches: &ArgMatches, spec: &OptionSpec) -> bool {
    matches
        .try_get_one::<bool>(spec.long())
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
}

fn last_value<'m>(matches: &'m ArgMatches, spec: &OptionSpec) -> Option<&'m OsStr> {
    matches
        .try_get_raw(spec.long())
        .ok()
        .flatten()
        .and_then(Iterator::last)
}

fn first_leftover(matches: &ArgMatches) -> Option<&OsStr> {
    matches
        .try_get_raw(LEFTOVERS)
        .ok()
        .flatten()
        .and_then(|mut words| words.next())
}

fn set_flag(args: &mut FrontendArgs, spec: &OptionSpec, flag: FlagOpt) {
    match flag {
        FlagOpt::Terminate => args.terminate = true,
        FlagOpt::Daemon => args.daemon = true,
        FlagOpt::Tpm2 => args.tpm2 = true,
        FlagOpt::VtpmProxy => args.vtpm_proxy = true,
        FlagOpt::PrintCapabilities => args.print_capabilities = true,
        FlagOpt::PrintStates => args.print_states = true,
        FlagOpt::PrintProfiles => args.not_yet_supported.push((spec.name, String::new())),
    }
}

fn store(args: &mut FrontendArgs, spec: &OptionSpec, stored: StoredOpt, value: String) {
    let slot = match stored {
        StoredOpt::Ctrl => &mut args.ctrl,
        StoredOpt::TpmState => &mut args.tpmstate,
        StoredOpt::Log => &mut args.log,
        StoredOpt::Pid => &mut args.pid,
        StoredOpt::Locality => &mut args.locality,
        StoredOpt::Flags => &mut args.flags,
        StoredOpt::Key => &mut args.key,
        StoredOpt::MigrationKey => &mut args.migration_key,
        StoredOpt::RunAs => &mut args.runas,
        StoredOpt::Seccomp => &mut args.seccomp,
        StoredOpt::Migration => &mut args.migration,
        StoredOpt::Chroot => {
            args.chroot = Some(PathBuf::from(value));
            return;
        }
        StoredOpt::Profile => {
            args.not_yet_supported.push((spec.name, value));
            return;
        }
    };
    *slot = Some(value);
}

/// chardev: a device was already chosen by `-c` or `-f`.
fn has_device(args: &FrontendArgs) -> bool {
    args.chardev.is_some() || args.fd.is_some()
}

// ---------------------------------------------------------------------------------------
// Values checked while parsing
// ---------------------------------------------------------------------------------------

/// `-p <port>`: a number in C's automatic base (`0x1000` works) below 65536.
fn parse_port(value: &OsStr) -> Result<u16, CliError> {
    let text = lossy(value);
    let number = parse_unsigned_32(&text)
        .ok_or_else(|| CliError::Invalid(format!("Cannot parse socket port number '{text}'.")))?;
    u16::try_from(number).map_err(|_| CliError::Invalid("Port is outside valid range.".into()))
}

/// `--print-info <flags>`: a 32-bit number in C's automatic base; 0 means not given.
fn parse_print_info(value: &OsStr) -> Result<Option<u32>, CliError> {
    let text = lossy(value);
    let flags = parse_unsigned_32(&text)
        .ok_or_else(|| CliError::Invalid(format!("Cannot parse info value '{text}'.")))?;
    Ok(Some(flags).filter(|flags| *flags != 0))
}

fn parse_unsigned_32(text: &str) -> Option<u32> {
    parse_c_integer(text, Radix::Auto)
        .ok()
        .and_then(|number| u32::try_from(number).ok())
}

/// `-f <fd>`: a decimal descriptor that is open and not a plain file, directory, block
/// device or symlink. (That it is not 0, 1 or 2 is checked later, after logging is set up.)
fn parse_data_fd(value: &OsStr, parse_error: &str) -> Result<RawFd, CliError> {
    let fd = parse_c_integer(&lossy(value), Radix::Fixed(10))
        .ok()
        .and_then(|number| RawFd::try_from(number).ok())
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| CliError::Invalid(parse_error.to_owned()))?;
    check_data_fd_type(fd)?;
    Ok(fd)
}

fn check_data_fd_type(fd: RawFd) -> Result<(), CliError> {
    let file_type = crate::io::fd::file_type_of(fd).map_err(|err| {
        CliError::Invalid(format!("Cannot stat file descriptor: {}", strerror(&err)))
    })?;
    match file_type {
        libc::S_IFREG | libc::S_IFDIR | libc::S_IFBLK | libc::S_IFLNK => Err(CliError::Invalid(
            "Given file descriptor type is not supported.".into(),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------

fn utf8_value(spec: &OptionSpec, value: &OsStr) -> Result<String, CliError> {
    value.to_str().map(str::to_owned).ok_or_else(|| {
        CliError::Invalid(format!(
            "The value of {} is not valid UTF-8: '{}'",
            spec.name,
            lossy(value)
        ))
    })
}

/// The C library's description of an OS error, as swtpm prints it (std's Display appends
/// ` (os error N)` to it).
fn strerror(error: &std::io::Error) -> String {
    let text = error.to_string();
    text.split(" (os error ")
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn lossy(text: &OsStr) -> String {
    text.to_string_lossy().into_owned()
}

/// clap's own one-line description of an error, for kinds getopt has no words for.
fn clap_text(error: &clap::Error) -> String {
    let text = error.to_string();
    let first_line = text.lines().next().unwrap_or_default();
    first_line
        .strip_prefix("error: ")
        .unwrap_or(first_line)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::cli::help::{frontend_help, usage};

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    fn run(words: &[&str]) -> Result<Invocation, CliError> {
        parse(&argv(words))
    }

    fn socket(words: &[&str]) -> Result<FrontendArgs, CliError> {
        frontend_args(&[&["swtpm", "socket"], words].concat())
    }

    fn chardev(words: &[&str]) -> Result<FrontendArgs, CliError> {
        frontend_args(&[&["swtpm", "chardev"], words].concat())
    }

    fn frontend_args(words: &[&str]) -> Result<FrontendArgs, CliError> {
        match run(words)? {
            Invocation::Run(args) => Ok(args),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn is_socket_help(result: Result<Invocation, CliError>) -> bool {
        result == Ok(Invocation::Help(frontend_help(Frontend::Socket, "swtpm")))
    }

    fn invalid(message: &str) -> CliError {
        CliError::Invalid(message.to_owned())
    }

    fn usage_message(result: Result<impl std::fmt::Debug, CliError>) -> String {
        match result {
            Err(CliError::Usage { message, usage }) => {
                assert!(usage.starts_with("Usage: swtpm "), "{usage}");
                message
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    /// An open descriptor on /dev/null (a character device), closed when dropped.
    fn dev_null() -> (File, String) {
        let file = File::open("/dev/null").unwrap();
        let fd = file.as_raw_fd().to_string();
        (file, fd)
    }

    /// A descriptor number that is not open in this process.
    const CLOSED_FD: &str = "1000000";

    // ---- top level ----

    #[test]
    fn top_level() {
        assert_eq!(run(&["swtpm"]), Err(invalid("Missing TPM interface type.")));
        assert_eq!(run(&[]), Err(invalid("Missing TPM interface type.")));
        for help in ["-h", "--help"] {
            assert_eq!(
                run(&["/usr/bin/swtpm", help, "bogus"]),
                Ok(Invocation::Help(usage("/usr/bin/swtpm")))
            );
        }
        for version in ["-v", "--version"] {
            assert_eq!(run(&["swtpm", version, "--bogus"]), Ok(Invocation::Version));
        }
        assert!(
            matches!(run(&["swtpm", "cuse", "-n", "vtpm0"]), Err(CliError::Invalid(m)) if m.contains("CUSE"))
        );
        for other in ["foo", "--hel", "Socket", "", "-x", "--socket"] {
            assert_eq!(
                run(&["swtpm", other]),
                Err(CliError::Usage {
                    message: format!("Unsupported TPM interface type '{other}'."),
                    usage: usage("swtpm"),
                })
            );
        }
    }

    #[test]
    fn non_utf8_words() {
        let program = OsString::from_vec(b"sw\xfftpm".to_vec());
        let bad = OsString::from_vec(b"x\xff".to_vec());
        let words = [program.clone(), bad.clone()];
        assert_eq!(
            parse(&words),
            Err(CliError::Usage {
                message: "Unsupported TPM interface type 'x\u{fffd}'.".into(),
                usage: usage("sw\u{fffd}tpm"),
            })
        );
        let words = [
            program.clone(),
            "socket".into(),
            "--tpmstate".into(),
            bad.clone(),
        ];
        assert_eq!(
            parse(&words),
            Err(invalid(
                "The value of --tpmstate is not valid UTF-8: 'x\u{fffd}'"
            ))
        );
        let words = [program.clone(), "socket".into(), bad.clone()];
        assert_eq!(parse(&words), Err(invalid("Unknown parameter 'x\u{fffd}'")));
        let words = [program, "chardev".into(), "-c".into(), bad.clone()];
        let Ok(Invocation::Run(args)) = parse(&words) else {
            panic!()
        };
        assert_eq!(args.chardev, Some(PathBuf::from(bad)));
    }

    // ---- socket: every option ----

    #[test]
    fn socket_with_no_options() {
        let args = socket(&[]).unwrap();
        assert_eq!(
            args,
            FrontendArgs {
                frontend: Some(Frontend::Socket),
                ..FrontendArgs::default()
            }
        );
    }

    #[test]
    fn socket_stores_every_option() {
        let (_null, fd) = dev_null();
        let args = socket(&[
            "--tpm2",
            "-d",
            "-t",
            "--print-capabilities",
            "--print-states",
            "--print-info",
            "0x40",
            "--server",
            "type=tcp,port=2321",
            "-f",
            &fd,
            "--ctrl",
            "type=unixio,path=/c",
            "--tpmstate",
            "dir=/s",
            "--log",
            "level=20",
            "--pid",
            "file=/p",
            "--locality",
            "reject-locality-4",
            "--flags",
            "not-need-init",
        ])
        .unwrap();
        assert_eq!(
            args,
            FrontendArgs {
                frontend: Some(Frontend::Socket),
                tpm2: true,
                daemon: true,
                terminate: true,
                print_capabilities: true,
                print_states: true,
                print_info: Some(0x40),
                server: Some(DataArg::Server("type=tcp,port=2321".into())),
                fd: fd.parse().ok(),
                ctrl: Some("type=unixio,path=/c".into()),
                tpmstate: Some("dir=/s".into()),
                log: Some("level=20".into()),
                pid: Some("file=/p".into()),
                locality: Some("reject-locality-4".into()),
                flags: Some("not-need-init".into()),
                ..FrontendArgs::default()
            }
        );
    }

    #[test]
    fn libvirt_command_line() {
        let args = socket(&[
            "--ctrl",
            "type=unixio,path=/run/libvirt/qemu/swtpm/1-vm-swtpm.sock,mode=0600",
            "--tpmstate",
            "dir=/var/lib/libvirt/swtpm/u/tpm2,mode=0600",
            "--log",
            "file=/var/log/swtpm/libvirt/qemu/vm-swtpm.log",
            "--terminate",
            "--tpm2",
        ])
        .unwrap();
        assert!(args.terminate && args.tpm2);
        assert_eq!(
            args.ctrl.as_deref(),
            Some("type=unixio,path=/run/libvirt/qemu/swtpm/1-vm-swtpm.sock,mode=0600")
        );
    }

    #[test]
    fn key_options_are_kept_raw_and_the_last_one_wins() {
        let args = socket(&[
            "--key",
            "pwdfd=3,mode=aes-256-cbc",
            "--migration-key",
            "pwdfd=4",
            "--key",
            "file=/k",
        ])
        .unwrap();
        assert_eq!(args.key.as_deref(), Some("file=/k"));
        assert_eq!(args.migration_key.as_deref(), Some("pwdfd=4"));
        assert!(args.not_yet_supported.is_empty());
    }

    #[test]
    fn not_yet_supported_options_are_recorded() {
        let args = socket(&[
            "--migration",
            "incoming",
            "--profile",
            "name=default-v1",
            "--print-profiles",
        ])
        .unwrap();
        assert_eq!(
            args.not_yet_supported,
            vec![
                ("--print-profiles", String::new()),
                ("--profile", "name=default-v1".into()),
            ]
        );
        assert_eq!(args.migration.as_deref(), Some("incoming"));
    }

    #[test]
    fn sandbox_options_are_stored() {
        let args = socket(&["-r", "tss", "-R", "/jail", "--seccomp", "action=none"]).unwrap();
        assert_eq!(args.runas.as_deref(), Some("tss"));
        assert_eq!(args.chroot, Some(PathBuf::from("/jail")));
        assert_eq!(args.seccomp.as_deref(), Some("action=none"));
        assert_eq!(
            socket(&["--runas", "a", "--runas", "b"])
                .unwrap()
                .runas
                .as_deref(),
            Some("b")
        );
        assert_eq!(socket(&["--runas=0"]).unwrap().runas.as_deref(), Some("0"));
    }

    // ---- getopt's syntax ----

    #[test]
    fn long_options_accept_unambiguous_prefixes() {
        let args = socket(&["--print-cap", "--tpmst", "dir=/s", "--tpm2", "--te"]).unwrap();
        assert!(args.print_capabilities && args.tpm2 && args.terminate);
        assert_eq!(args.tpmstate.as_deref(), Some("dir=/s"));
        assert_eq!(
            socket(&["--loc", "x"]).unwrap().locality.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn an_exact_name_wins_over_a_longer_option() {
        let args = socket(&["--migration", "incoming"]).unwrap();
        assert_eq!(args.migration.as_deref(), Some("incoming"));
        assert!(args.migration_key.is_none());
        let args = socket(&["--migration-k", "file=/k"]).unwrap();
        assert_eq!(args.migration_key.as_deref(), Some("file=/k"));
        assert!(args.not_yet_supported.is_empty());
        let args = socket(&["--print-info", "1"]).unwrap();
        assert_eq!(args.print_info, Some(1));
    }

    #[test]
    fn ambiguous_prefixes_are_errors() {
        assert_eq!(
            usage_message(socket(&["--print"])),
            "socket: option '--print' is ambiguous; possibilities: '--print-info' \
             '--print-capabilities' '--print-states' '--print-profiles'"
        );
        assert_eq!(
            usage_message(socket(&["--migr", "x"])),
            "socket: option '--migr' is ambiguous; possibilities: '--migration-key' '--migration'"
        );
        assert!(usage_message(socket(&["--tpm"])).contains("'--tpm2' '--tpmstate'"));
        assert!(
            usage_message(socket(&["--p", "1"])).starts_with("socket: option '--p' is ambiguous")
        );
    }

    #[test]
    fn values_attached_or_separate() {
        assert_eq!(
            socket(&["--tpmstate=dir=/s"]).unwrap().tpmstate.as_deref(),
            Some("dir=/s")
        );
        assert_eq!(
            socket(&["--tpmstate="]).unwrap().tpmstate.as_deref(),
            Some("")
        );
        assert_eq!(
            socket(&["-p2321"]).unwrap().server,
            Some(DataArg::Port(2321))
        );
        assert_eq!(
            socket(&["--port=2321"]).unwrap().server,
            Some(DataArg::Port(2321))
        );
        assert_eq!(
            socket(&["--po", "1"]).unwrap().server,
            Some(DataArg::Port(1))
        );
        // A required value is the next word, whatever it looks like.
        assert_eq!(
            socket(&["--tpmstate", "--tpm2"])
                .unwrap()
                .tpmstate
                .as_deref(),
            Some("--tpm2")
        );
        assert_eq!(socket(&["--log", "-h"]).unwrap().log.as_deref(), Some("-h"));
        assert_eq!(socket(&["-r", "-x"]).unwrap().runas.as_deref(), Some("-x"));
    }

    #[test]
    fn clustered_short_options() {
        let args = socket(&["-dt"]).unwrap();
        assert!(args.daemon && args.terminate);
        let args = socket(&["-dtp2321"]).unwrap();
        assert!(args.daemon && args.terminate);
        assert_eq!(args.server, Some(DataArg::Port(2321)));
        let args = socket(&["-dp", "0x10"]).unwrap();
        assert_eq!(args.server, Some(DataArg::Port(16)));
        assert!(is_socket_help(run(&["swtpm", "socket", "-th"])));
    }

    #[test]
    fn repeated_options_last_wins() {
        let args = socket(&[
            "--tpmstate",
            "bad",
            "--tpmstate",
            "dir=/ok",
            "--log",
            "a",
            "--log",
            "b",
        ])
        .unwrap();
        assert_eq!(args.tpmstate.as_deref(), Some("dir=/ok"));
        assert_eq!(args.log.as_deref(), Some("b"));
        let args = socket(&["--tpm2", "--tpm2", "-d", "-d", "-t", "--terminate"]).unwrap();
        assert!(args.tpm2 && args.daemon && args.terminate);
        assert_eq!(
            socket(&["--print-info", "1", "--print-info", "0"])
                .unwrap()
                .print_info,
            None
        );
        assert_eq!(
            socket(&["--print-info", "0", "--print-info", "2"])
                .unwrap()
                .print_info,
            Some(2)
        );
    }

    #[test]
    fn port_and_server_last_wins() {
        assert_eq!(
            socket(&["-p", "1", "--server", "type=unixio,path=/s"])
                .unwrap()
                .server,
            Some(DataArg::Server("type=unixio,path=/s".into()))
        );
        assert_eq!(
            socket(&["--server", "port=5", "-p", "1"]).unwrap().server,
            Some(DataArg::Port(1))
        );
        assert_eq!(
            socket(&["-p", "1", "--server", "x", "-p", "2"])
                .unwrap()
                .server,
            Some(DataArg::Port(2))
        );
    }

    #[test]
    fn port_values() {
        for (text, port) in [
            ("0x1000", 0x1000),
            ("010", 8),
            (" 12", 12),
            ("+5", 5),
            ("65535", 65535),
            ("0", 0),
        ] {
            assert_eq!(
                socket(&["-p", text]).unwrap().server,
                Some(DataArg::Port(port)),
                "{text}"
            );
        }
        for bad in [
            "12 ",
            "",
            "-1",
            "4294967296",
            "99999999999999999999",
            "0x",
            "08",
            "x",
            "٣",
            "--tpm2",
        ] {
            assert_eq!(
                socket(&["-p", bad]),
                Err(invalid(&format!(
                    "Cannot parse socket port number '{bad}'."
                ))),
                "{bad}"
            );
        }
        for out_of_range in ["65536", "4294967295", "0x10000"] {
            assert_eq!(
                socket(&["-p", out_of_range]),
                Err(invalid("Port is outside valid range."))
            );
        }
        // Every occurrence is checked, not only the last.
        assert_eq!(
            socket(&["-p", "x", "-p", "1"]),
            Err(invalid("Cannot parse socket port number 'x'."))
        );
    }

    #[test]
    fn print_info_values() {
        assert_eq!(
            socket(&["--print-info", "64"]).unwrap().print_info,
            Some(64)
        );
        assert_eq!(
            socket(&["--print-info", "0x80"]).unwrap().print_info,
            Some(0x80)
        );
        assert_eq!(
            socket(&["--print-info", "0xffffffff"]).unwrap().print_info,
            Some(u32::MAX)
        );
        assert_eq!(socket(&["--print-info", "0"]).unwrap().print_info, None);
        for bad in ["0x100000000", "-1", "x", "", "1 "] {
            assert_eq!(
                socket(&["--print-info", bad]),
                Err(invalid(&format!("Cannot parse info value '{bad}'."))),
                "{bad}"
            );
        }
    }

    #[test]
    fn fd_values() {
        let (_null, null_fd) = dev_null();
        assert_eq!(socket(&["-f", &null_fd]).unwrap().fd, null_fd.parse().ok());
        assert_eq!(
            socket(&["--fd", &format!(" {null_fd}")]).unwrap().fd,
            null_fd.parse().ok()
        );
        let (one, _other) = UnixStream::pair().unwrap();
        let socket_fd = one.as_raw_fd();
        assert_eq!(
            socket(&["--fd", &socket_fd.to_string()]).unwrap().fd,
            Some(socket_fd)
        );
        // The last -f wins in the socket front end.
        assert_eq!(
            socket(&["-f", &null_fd, "-f", &socket_fd.to_string()])
                .unwrap()
                .fd,
            Some(socket_fd)
        );
        for bad in [
            "x",
            "-1",
            "0x3",
            "3 ",
            "4294967299",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(
                socket(&["-f", bad]),
                Err(invalid("Cannot parse socket file descriptor.")),
                "{bad}"
            );
        }
        assert_eq!(
            socket(&["-f", CLOSED_FD]),
            Err(invalid("Cannot stat file descriptor: Bad file descriptor"))
        );
    }

    #[test]
    fn fds_of_files_and_directories_are_refused() {
        let unsupported = Err(invalid("Given file descriptor type is not supported."));
        let file = tempfile::tempfile().unwrap();
        assert_eq!(socket(&["-f", &file.as_raw_fd().to_string()]), unsupported);
        let dir = File::open(std::env::temp_dir()).unwrap();
        assert_eq!(socket(&["-f", &dir.as_raw_fd().to_string()]), unsupported);
    }

    // ---- acting in command-line order ----

    #[test]
    fn help_acts_when_reached() {
        assert!(is_socket_help(run(&[
            "swtpm",
            "socket",
            "--tpmstate",
            "bogus",
            "--help"
        ])));
        assert!(is_socket_help(run(&[
            "swtpm", "socket", "--help", "-f", CLOSED_FD
        ])));
        assert!(is_socket_help(run(&["swtpm", "socket", "-h", "-p", "x"])));
        assert!(is_socket_help(run(&["swtpm", "socket", "--hel"])));
        assert_eq!(
            run(&["swtpm", "socket", "-f", CLOSED_FD, "--help"]),
            Err(invalid("Cannot stat file descriptor: Bad file descriptor"))
        );
        assert_eq!(
            run(&["swtpm", "socket", "--print-info", "x", "-h"]),
            Err(invalid("Cannot parse info value 'x'."))
        );
        // Leftovers are reported only after all options.
        assert!(is_socket_help(run(&["swtpm", "socket", "foo", "--help"])));
        let help = run(&["/opt/swtpm", "socket", "-h"]).unwrap();
        assert_eq!(
            help,
            Invocation::Help(frontend_help(Frontend::Socket, "/opt/swtpm"))
        );
    }

    #[test]
    fn options_before_a_bad_one_still_act() {
        assert!(is_socket_help(run(&[
            "swtpm", "socket", "--help", "--bogus"
        ])));
        assert!(is_socket_help(run(&["swtpm", "socket", "-hx"])));
        assert!(is_socket_help(run(&[
            "swtpm", "socket", "--help", "--ctrl"
        ])));
        assert!(is_socket_help(run(&[
            "swtpm", "socket", "--help", "--tpm2=x"
        ])));
        assert_eq!(
            run(&["swtpm", "socket", "-p", "x", "--bogus"]),
            Err(invalid("Cannot parse socket port number 'x'."))
        );
        assert_eq!(
            usage_message(run(&["swtpm", "socket", "--bogus", "--help"])),
            "socket: unrecognized option '--bogus'"
        );
        assert_eq!(
            usage_message(run(&["swtpm", "socket", "-xh"])),
            "socket: invalid option -- 'x'"
        );
        assert_eq!(
            usage_message(run(&["swtpm", "socket", "-p", "1", "--bogus", "-p", "x"])),
            "socket: unrecognized option '--bogus'"
        );
    }

    #[test]
    fn leftovers_are_unknown_parameters() {
        assert_eq!(socket(&["foo"]), Err(invalid("Unknown parameter 'foo'")));
        assert_eq!(
            socket(&["foo", "bar", "--tpm2"]),
            Err(invalid("Unknown parameter 'foo'"))
        );
        assert_eq!(
            socket(&["--tpm2", "foo", "--tpmstate", "x", "bar"]),
            Err(invalid("Unknown parameter 'foo'"))
        );
        assert_eq!(
            socket(&["--", "--tpm2"]),
            Err(invalid("Unknown parameter '--tpm2'"))
        );
        assert_eq!(socket(&["-"]), Err(invalid("Unknown parameter '-'")));
        assert_eq!(socket(&["--"]).unwrap().frontend, Some(Frontend::Socket));
    }

    // ---- getopt-style error messages ----

    #[test]
    fn malformed_options_name_the_option() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus"], "socket: unrecognized option '--bogus'"),
            (&["--bogus=1"], "socket: unrecognized option '--bogus=1'"),
            (
                &["--print=1"],
                "socket: option '--print=1' is ambiguous; possibilities: '--print-info' '--print-capabilities' '--print-states' '--print-profiles'",
            ),
            (&["--é"], "socket: unrecognized option '--é'"),
            (&["-x"], "socket: invalid option -- 'x'"),
            (&["-tx"], "socket: invalid option -- 'x'"),
            (&["-é"], "socket: invalid option -- 'é'"),
            (&["-1"], "socket: invalid option -- '1'"),
            (
                &["--tpm2=x"],
                "socket: option '--tpm2' doesn't allow an argument",
            ),
            (
                &["--print-cap=1"],
                "socket: option '--print-capabilities' doesn't allow an argument",
            ),
            (
                &["--help=x"],
                "socket: option '--help' doesn't allow an argument",
            ),
            (
                &["--tpmstate"],
                "socket: option '--tpmstate' requires an argument",
            ),
            (
                &["--tpmst"],
                "socket: option '--tpmstate' requires an argument",
            ),
            (&["--port"], "socket: option '--port' requires an argument"),
            (&["-p"], "socket: option requires an argument -- 'p'"),
            (&["-dp"], "socket: option requires an argument -- 'p'"),
            (&["-R"], "socket: option requires an argument -- 'R'"),
            (&["-c", "/dev/tpm0"], "socket: invalid option -- 'c'"),
            (
                &["--vtpm-proxy"],
                "socket: unrecognized option '--vtpm-proxy'",
            ),
            (
                &["--chardev", "/dev/x"],
                "socket: unrecognized option '--chardev'",
            ),
        ];
        for (words, message) in cases {
            assert_eq!(usage_message(socket(words)), *message, "{words:?}");
        }
    }

    #[test]
    fn usage_errors_carry_the_front_end_help() {
        assert_eq!(
            run(&["/usr/bin/swtpm", "chardev", "--bogus"]),
            Err(CliError::Usage {
                message: "chardev: unrecognized option '--bogus'".into(),
                usage: frontend_help(Frontend::Chardev, "/usr/bin/swtpm"),
            })
        );
    }

    // ---- chardev ----

    #[test]
    fn chardev_device_first_one_wins() {
        let (_null, fd) = dev_null();
        assert_eq!(
            chardev(&["-c", "/dev/tpm0"]).unwrap().chardev,
            Some(PathBuf::from("/dev/tpm0"))
        );
        assert_eq!(
            chardev(&["--chardev=/dev/a", "-c", "/dev/b"])
                .unwrap()
                .chardev,
            Some("/dev/a".into())
        );
        let args = chardev(&["-c", "/dev/a", "-f", CLOSED_FD]).unwrap();
        assert_eq!((args.chardev, args.fd), (Some("/dev/a".into()), None));
        let args = chardev(&["-f", &fd, "-c", "/nonexistent", "-f", "x"]).unwrap();
        assert_eq!((args.chardev, args.fd), (None, fd.parse().ok()));
        assert_eq!(
            chardev(&["-c/dev/a"]).unwrap().chardev,
            Some("/dev/a".into())
        );
    }

    #[test]
    fn chardev_fd_errors() {
        assert_eq!(
            chardev(&["-f", "x"]),
            Err(invalid("Cannot parse character device file descriptor."))
        );
        assert_eq!(
            chardev(&["-f", "-1"]),
            Err(invalid("Cannot parse character device file descriptor."))
        );
        assert_eq!(
            chardev(&["-f", CLOSED_FD]),
            Err(invalid("Cannot stat file descriptor: Bad file descriptor"))
        );
    }

    #[test]
    fn vtpm_proxy_conflicts_with_a_device() {
        let (_null, fd) = dev_null();
        let conflict = Err(invalid("Cannot use vTPM proxy with a provided device."));
        assert_eq!(chardev(&["-c", "/dev/null", "--vtpm-proxy"]), conflict);
        assert_eq!(chardev(&["-f", &fd, "--vtpm-proxy"]), conflict);
        assert_eq!(chardev(&["--vtpm-proxy", "-c", "/dev/null"]), conflict);
        let args = chardev(&["--vtpm-proxy", "--vtpm-proxy", "--tpm2"]).unwrap();
        assert!(args.vtpm_proxy && args.tpm2);
        assert_eq!(
            run(&[
                "swtpm",
                "chardev",
                "-c",
                "/dev/null",
                "--vtpm-proxy",
                "--help"
            ]),
            Ok(Invocation::Help(frontend_help(Frontend::Chardev, "swtpm")))
        );
        // Leftovers are reported before the conflict.
        assert_eq!(
            chardev(&["-c", "/dev/null", "--vtpm-proxy", "foo"]),
            Err(invalid("Unknown parameter 'foo'"))
        );
    }

    #[test]
    fn chardev_has_no_socket_options() {
        for (words, message) in [
            (&["-p", "1"][..], "chardev: invalid option -- 'p'"),
            (&["-t"], "chardev: invalid option -- 't'"),
            (
                &["--server", "port=1"],
                "chardev: unrecognized option '--server'",
            ),
            (
                &["--terminate"],
                "chardev: unrecognized option '--terminate'",
            ),
        ] {
            assert_eq!(usage_message(chardev(words)), message, "{words:?}");
        }
        let args = chardev(&[
            "--ctrl",
            "type=unixio,path=/c",
            "--print-info",
            "1",
            "-d",
            "--pid",
            "fd=3",
        ])
        .unwrap();
        assert_eq!(args.ctrl.as_deref(), Some("type=unixio,path=/c"));
        assert_eq!(args.print_info, Some(1));
        assert!(args.daemon);
        // `--p` is not ambiguous with --port and --pid here: chardev has no --port.
        assert!(usage_message(chardev(&["--p", "x"])).contains("'--pid'"));
        assert!(!usage_message(chardev(&["--p", "x"])).contains("--port"));
    }

    // ---- help lists everything that is accepted ----

    #[test]
    fn help_lists_every_accepted_option() {
        for frontend in [Frontend::Socket, Frontend::Chardev] {
            let text = frontend_help(frontend, "swtpm");
            for spec in options_of(frontend) {
                let listed = match spec.short {
                    Some(short) => format!("\n-{short}|{}", spec.name),
                    None => format!("\n{}", spec.name),
                };
                assert!(text.contains(&listed), "{frontend:?} help lacks {listed:?}");
            }
        }
        assert!(frontend_help(Frontend::Socket, "swtpm").contains("\n--tpm2 "));
    }

    #[test]
    fn every_option_is_accepted_by_its_front_ends_only() {
        for frontend in [Frontend::Socket, Frontend::Chardev] {
            let (_null, fd) = dev_null();
            for spec in OPTIONS {
                if matches!(spec.kind, Kind::InOrder(InOrderOpt::Help)) {
                    continue;
                }
                let mut words = vec!["swtpm", frontend.name(), spec.name];
                if !matches!(spec.kind, Kind::Flag(_)) {
                    words.push(if spec.kind == Kind::InOrder(InOrderOpt::Fd) {
                        &fd
                    } else {
                        "1"
                    });
                }
                let result = run(&words);
                if spec.available_in(frontend) {
                    assert!(
                        matches!(result, Ok(Invocation::Run(_))),
                        "{words:?}: {result:?}"
                    );
                } else {
                    assert!(
                        matches!(result, Err(CliError::Usage { .. })),
                        "{words:?}: {result:?}"
                    );
                }
            }
        }
    }

    // ---- garbage never panics ----

    #[test]
    fn garbage_argv_gives_errors_not_panics() {
        const PIECES: &[&str] = &[
            "socket",
            "chardev",
            "cuse",
            "-",
            "--",
            "-h",
            "--help",
            "-p",
            "-f",
            "-c",
            "-d",
            "-t",
            "-dt",
            "-th",
            "-x",
            "--p",
            "--print",
            "--print-info",
            "--tpm2",
            "--tpm2=",
            "--port=",
            "--tpmstate",
            "--tpmstate=",
            "--ctrl",
            "--server",
            "--vtpm-proxy",
            "--migration",
            "--key",
            "-r",
            "-R",
            "0",
            "1",
            "2",
            "0x",
            "0x40",
            "65536",
            "-1",
            CLOSED_FD,
            "é",
            "🦀",
            "",
            " ",
            "=",
            "--=",
            "---",
            "-=",
            "dir=/x",
            "\u{0}",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3_000 {
            let len = next() % 8;
            let mut words = vec!["swtpm"];
            if next() % 4 != 0 {
                words.push(if next() % 2 == 0 { "socket" } else { "chardev" });
            }
            words.extend((0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]));
            let _ = run(&words);
        }
    }

    #[test]
    fn long_argv_is_handled() {
        let mut words = vec!["swtpm", "socket"];
        words.extend(std::iter::repeat_n("--tpm2", 5_000));
        words.push("--bogus");
        assert_eq!(
            usage_message(run(&words)),
            "socket: unrecognized option '--bogus'"
        );
        let long_value = "x".repeat(1 << 20);
        assert_eq!(
            socket(&["--tpmstate", &long_value])
                .unwrap()
                .tpmstate
                .map(|v| v.len()),
            Some(1 << 20)
        );
    }
}
