//! The command line of `swtpm_ioctl` → what to do (cli.md §12). Pure.
//!
//! swtpm_ioctl scans with `getopt_long_only`, so `-c`, `-stop` and `--c` all name an
//! option, but it then recognises the command by the literal word: only the spellings
//! in its help (`-c`, `--stop`, `-l <loc>` as two words, ...) run a command; any other
//! spelling of a command is accepted while scanning and answered with the usage text
//! after connecting. Scanning errors are printed and scanning goes on. A bad value of
//! `-l`, `-r`, `-b`, `--info`, `--tcp` or a `--save`/`--load` without a file name ends
//! the scan at once; a second command too. That order is kept here.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::DEFAULT_PORT;
use crate::tools::getopt::{Arg, Event, LongOption, Scanner, Value};
use crate::tools::number::{self, Radix};
use crate::tools::target::{self, PortError, Target};

/// The name used in messages when argv is empty.
const DEFAULT_PROGRAM: &str = "swtpm_ioctl";
/// The highest locality.
const MAX_LOCALITY: u64 = 4;

/// What `swtpm_ioctl <argv...>` asks for, and what the scan printed on the way.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// getopt's complaints, in order, for stderr (they do not stop the scan).
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `--help`: usage on stdout, exit 0.
    Help,
    /// `--version`: the version line, exit 0.
    Version,
    /// Exit 1 with this message on stderr.
    Refused(ArgsError),
    Run(Invocation),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub target: Target,
    pub action: Action,
    /// Whether the command was written as swtpm_ioctl documents it; if not, swtpm_ioctl
    /// prints its usage (after connecting) and exits 1.
    pub as_documented: bool,
}

/// The control command to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    GetCapability,
    Init,
    Stop,
    Shutdown,
    GetEstablished,
    ResetEstablished {
        locality: u8,
    },
    SetLocality {
        locality: u8,
    },
    StoreVolatile,
    Cancel,
    Hash(HashInput),
    /// `blob_type` is checked only after connecting, as swtpm_ioctl does.
    Save {
        blob_type: OsString,
        file: PathBuf,
    },
    Load {
        blob_type: OsString,
        file: PathBuf,
    },
    GetConfig,
    SetBufferSize {
        size: u32,
    },
    GetInfo {
        flags: u64,
    },
    LockStorage {
        retries: u32,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum HashInput {
    /// `-h -`.
    Stdin,
    Data(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("Only one command may be given.")]
    OnlyOneCommand,
    #[error("No valid command.")]
    NoCommand,
    #[error("Error: Missing device name.")]
    MissingDevice,
    #[error("Could not get locality number from {0}.")]
    Locality(String),
    #[error("Locality outside valid range of [0..4].")]
    LocalityRange,
    #[error("Could not get buffersize from {0}.")]
    BufferSize(String),
    #[error("Cannot parse info flags.")]
    InfoFlags,
    #[error("Could not get a retry count (0 or more) from {0}.")]
    Retries(String),
    #[error("Missing filename argument for {0} option")]
    MissingFilename(&'static str),
    #[error(transparent)]
    Port(#[from] PortError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    TpmDevice,
    Tcp,
    Unix,
    Version,
    Help,
    Command(Cmd),
}

/// The options that are commands (only one may be given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    GetCapability,
    Init,
    Stop,
    Shutdown,
    GetEstablished,
    ResetEstablished,
    SetLocality,
    StoreVolatile,
    Cancel,
    Hash,
    Save,
    Load,
    GetConfig,
    BufferSize,
    Info,
    LockStorage,
}

const fn opt(name: &'static str, arg: Arg, id: Opt) -> LongOption<Opt> {
    LongOption::new(name, arg, id)
}

/// swtpm_ioctl's options, in its order (getopt lists ambiguous candidates in this order).
#[rustfmt::skip]
const OPTIONS: &[LongOption<Opt>] = &[
    opt("tpm-device",   Arg::Required, Opt::TpmDevice),
    opt("tcp",          Arg::Required, Opt::Tcp),
    opt("unix",         Arg::Required, Opt::Unix),
    opt("c",            Arg::None,     Opt::Command(Cmd::GetCapability)),
    opt("i",            Arg::None,     Opt::Command(Cmd::Init)),
    opt("stop",         Arg::None,     Opt::Command(Cmd::Stop)),
    opt("s",            Arg::None,     Opt::Command(Cmd::Shutdown)),
    opt("e",            Arg::None,     Opt::Command(Cmd::GetEstablished)),
    opt("r",            Arg::Required, Opt::Command(Cmd::ResetEstablished)),
    opt("l",            Arg::Required, Opt::Command(Cmd::SetLocality)),
    opt("v",            Arg::None,     Opt::Command(Cmd::StoreVolatile)),
    opt("C",            Arg::None,     Opt::Command(Cmd::Cancel)),
    opt("h",            Arg::Required, Opt::Command(Cmd::Hash)),
    opt("save",         Arg::Required, Opt::Command(Cmd::Save)),
    opt("load",         Arg::Required, Opt::Command(Cmd::Load)),
    opt("g",            Arg::None,     Opt::Command(Cmd::GetConfig)),
    opt("b",            Arg::Required, Opt::Command(Cmd::BufferSize)),
    opt("info",         Arg::Required, Opt::Command(Cmd::Info)),
    opt("lock-storage", Arg::Required, Opt::Command(Cmd::LockStorage)),
    opt("version",      Arg::None,     Opt::Version),
    opt("help",         Arg::None,     Opt::Help),
];

/// The one spelling of each command that runs it.
fn documented_word(cmd: Cmd) -> &'static str {
    match cmd {
        Cmd::GetCapability => "-c",
        Cmd::Init => "-i",
        Cmd::Stop => "--stop",
        Cmd::Shutdown => "-s",
        Cmd::GetEstablished => "-e",
        Cmd::ResetEstablished => "-r",
        Cmd::SetLocality => "-l",
        Cmd::StoreVolatile => "-v",
        Cmd::Cancel => "-C",
        Cmd::Hash => "-h",
        Cmd::Save => "--save",
        Cmd::Load => "--load",
        Cmd::GetConfig => "-g",
        Cmd::BufferSize => "-b",
        Cmd::Info => "--info",
        Cmd::LockStorage => "--lock-storage",
    }
}

/// The program name for messages: `argv[0]` as given.
pub fn program_name(argv: &[OsString]) -> String {
    argv.first().map_or_else(
        || DEFAULT_PROGRAM.to_owned(),
        |p| p.to_string_lossy().into_owned(),
    )
}

/// Parses the whole argv, `argv[0]` included.
pub fn parse(argv: &[OsString]) -> Parsed {
    let program = program_name(argv);
    let words: Vec<&OsStr> = argv.iter().skip(1).map(OsString::as_os_str).collect();
    let mut scanner = Scanner::new(&program, OPTIONS, &words);
    let mut state = ScanState::default();
    let mut warnings = Vec::new();
    let outcome = loop {
        let Some(event) = scanner.next() else {
            break state.finish();
        };
        let step = match event {
            Event::Error(message) => {
                warnings.push(message);
                Ok(None)
            }
            Event::Operand(word) => {
                state.operand.get_or_insert_with(|| word.into());
                Ok(None)
            }
            Event::Option { id, word, value } => state.option(id, word, value, &mut scanner),
        };
        match step {
            Ok(None) => {}
            Ok(Some(outcome)) => break outcome,
            Err(err) => break Outcome::Refused(err),
        }
    };
    Parsed { warnings, outcome }
}

#[derive(Default)]
struct ScanState {
    device: Option<PathBuf>,
    tcp: Option<target::TcpTarget>,
    unix: Option<PathBuf>,
    /// The first non-option word: the device when no target option is given.
    operand: Option<PathBuf>,
    action: Option<(Action, bool)>,
}

impl ScanState {
    /// Handles one option; `Some` ends the scan with that outcome.
    fn option(
        &mut self,
        id: Opt,
        word: &OsStr,
        value: Option<Value<'_>>,
        scanner: &mut Scanner<'_, Opt>,
    ) -> Result<Option<Outcome>, ArgsError> {
        let optarg = value.map(Value::text).unwrap_or_default();
        match id {
            Opt::TpmDevice => self.device = Some(optarg.into()),
            Opt::Unix => self.unix = Some(optarg.into()),
            Opt::Tcp => self.tcp = Some(target::parse_tcp(&lossy(optarg), DEFAULT_PORT)?),
            Opt::Version => return Ok(Some(Outcome::Version)),
            Opt::Help => return Ok(Some(Outcome::Help)),
            Opt::Command(command) => {
                if self.action.is_some() {
                    return Err(ArgsError::OnlyOneCommand);
                }
                let as_documented = word.as_bytes() == documented_word(command).as_bytes()
                    && !matches!(value, Some(Value::Attached(_)));
                // swtpm_ioctl takes a command's value from the word before the next one,
                // which for `-l=2` is `-l=2` itself.
                let text = match value {
                    Some(Value::Attached(_)) => word,
                    _ => optarg,
                };
                let action = command_action(command, text, scanner)?;
                self.action = Some((action, as_documented));
            }
        }
        Ok(None)
    }

    fn finish(self) -> Outcome {
        let Some((action, as_documented)) = self.action else {
            return Outcome::Refused(ArgsError::NoCommand);
        };
        let target = if let Some(device) = self.device {
            Target::Device(device)
        } else if let Some(tcp) = self.tcp {
            Target::Tcp(tcp)
        } else if let Some(path) = self.unix {
            Target::Unix(path)
        } else if let Some(device) = self.operand {
            Target::Device(device)
        } else {
            return Outcome::Refused(ArgsError::MissingDevice);
        };
        Outcome::Run(Invocation {
            target,
            action,
            as_documented,
        })
    }
}

fn command_action(
    command: Cmd,
    text: &OsStr,
    scanner: &mut Scanner<'_, Opt>,
) -> Result<Action, ArgsError> {
    Ok(match command {
        Cmd::GetCapability => Action::GetCapability,
        Cmd::Init => Action::Init,
        Cmd::Stop => Action::Stop,
        Cmd::Shutdown => Action::Shutdown,
        Cmd::GetEstablished => Action::GetEstablished,
        Cmd::StoreVolatile => Action::StoreVolatile,
        Cmd::Cancel => Action::Cancel,
        Cmd::GetConfig => Action::GetConfig,
        Cmd::ResetEstablished => Action::ResetEstablished {
            locality: parse_locality(&lossy(text))?,
        },
        Cmd::SetLocality => Action::SetLocality {
            locality: parse_locality(&lossy(text))?,
        },
        Cmd::Hash => Action::Hash(match text.as_bytes() {
            b"-" => HashInput::Stdin,
            data => HashInput::Data(data.to_vec()),
        }),
        Cmd::Save => Action::Save {
            blob_type: text.into(),
            file: file_argument("--save", scanner)?,
        },
        Cmd::Load => Action::Load {
            blob_type: text.into(),
            file: file_argument("--load", scanner)?,
        },
        Cmd::BufferSize => Action::SetBufferSize {
            size: parse_buffer_size(&lossy(text))?,
        },
        Cmd::Info => Action::GetInfo {
            flags: parse_info_flags(&lossy(text))?,
        },
        Cmd::LockStorage => Action::LockStorage {
            retries: parse_retries(&lossy(text))?,
        },
    })
}

/// `--save <type> <file>`: the file is the next word, which must not look like an option.
fn file_argument(
    option: &'static str,
    scanner: &mut Scanner<'_, Opt>,
) -> Result<PathBuf, ArgsError> {
    match scanner.peek_word() {
        Some(word) if !word.as_bytes().starts_with(b"-") => {
            scanner.skip_word();
            Ok(word.into())
        }
        _ => Err(ArgsError::MissingFilename(option)),
    }
}

/// A decimal locality, text after the digits ignored (as swtpm_ioctl). swtpm_ioctl
/// also cuts the number to 32 bits, so that 4294967297 is locality 1; we refuse it.
fn parse_locality(text: &str) -> Result<u8, ArgsError> {
    let number = number::leading(text, Radix::Decimal)
        .ok_or_else(|| ArgsError::Locality(text.to_owned()))?;
    if number.value > MAX_LOCALITY {
        return Err(ArgsError::LocalityRange);
    }
    Ok(number.value as u8)
}

/// A decimal size; like swtpm_ioctl, `-1` (and anything too big) asks for the maximum.
fn parse_buffer_size(text: &str) -> Result<u32, ArgsError> {
    let number = number::leading(text, Radix::Decimal)
        .ok_or_else(|| ArgsError::BufferSize(text.to_owned()))?;
    Ok(u32::try_from(number.value).unwrap_or(u32::MAX))
}

/// Flags in C notation (`0x3`, `010`, `-1` for all bits); the whole text must be a number,
/// and the empty text is 0 (strtoull rules, as swtpm_ioctl).
fn parse_info_flags(text: &str) -> Result<u64, ArgsError> {
    if text.is_empty() {
        return Ok(0);
    }
    match number::leading(text, Radix::Auto) {
        Some(number) if number.rest.is_empty() && !number.overflow => Ok(number.value),
        _ => Err(ArgsError::InfoFlags),
    }
}

/// `--lock-storage <n>` (swtpm 0.8+): a decimal count of retries. swtpm_ioctl 0.10.2
/// parses it but always sends 0; we send what was given.
fn parse_retries(text: &str) -> Result<u32, ArgsError> {
    number::leading(text, Radix::Decimal)
        .filter(|number| !number.negative)
        .and_then(|number| u32::try_from(number.value).ok())
        .ok_or_else(|| ArgsError::Retries(text.to_owned()))
}

fn lossy(text: &OsStr) -> String {
    text.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::target::TcpTarget;

    fn parse_words(words: &[&str]) -> Parsed {
        let argv: Vec<OsString> = std::iter::once("swtpm_ioctl")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect();
        parse(&argv)
    }

    fn run(words: &[&str]) -> Invocation {
        match parse_words(words) {
            Parsed {
                outcome: Outcome::Run(invocation),
                ..
            } => invocation,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    fn refused(words: &[&str]) -> ArgsError {
        match parse_words(words).outcome {
            Outcome::Refused(err) => err,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    fn unix(path: &str) -> Target {
        Target::Unix(path.into())
    }

    #[test]
    fn documented_commands() {
        let invocation = run(&["--unix", "/s", "-c"]);
        assert_eq!(invocation.target, unix("/s"));
        assert_eq!(invocation.action, Action::GetCapability);
        assert!(invocation.as_documented);
        assert_eq!(
            run(&["-l", "2", "--unix", "/s"]).action,
            Action::SetLocality { locality: 2 }
        );
        assert_eq!(
            run(&["--unix", "/s", "-r", "3x"]).action,
            Action::ResetEstablished { locality: 3 }
        );
        assert_eq!(
            run(&["--unix", "/s", "-b", "-1"]).action,
            Action::SetBufferSize { size: u32::MAX }
        );
        assert_eq!(
            run(&["--unix", "/s", "-b", "0x10"]).action,
            Action::SetBufferSize { size: 0 }
        );
        assert_eq!(
            run(&["--unix", "/s", "--info", "-1"]).action,
            Action::GetInfo { flags: u64::MAX }
        );
        assert_eq!(
            run(&["--unix", "/s", "--info", ""]).action,
            Action::GetInfo { flags: 0 }
        );
        assert_eq!(
            run(&["--unix", "/s", "--info", "010"]).action,
            Action::GetInfo { flags: 8 }
        );
        assert_eq!(
            run(&["--unix", "/s", "-h", "-"]).action,
            Action::Hash(HashInput::Stdin)
        );
        assert_eq!(
            run(&["--unix", "/s", "-h", "-c"]).action,
            Action::Hash(HashInput::Data(b"-c".to_vec()))
        );
        assert_eq!(
            run(&["--unix", "/s", "--lock-storage", "300"]).action,
            Action::LockStorage { retries: 300 }
        );
    }

    #[test]
    fn other_spellings_scan_but_are_not_documented() {
        for words in [
            &["--unix", "/s", "--c"][..],
            &["--unix", "/s", "-stop"],
            &["--unix", "/s", "-info", "1"],
            &["--unix", "/s", "-sa", "permanent", "f"],
            &["--unix", "/s", "-h=abc"],
        ] {
            assert!(!run(words).as_documented, "{words:?}");
        }
        assert!(run(&["--unix", "/s", "--stop"]).as_documented);
    }

    #[test]
    fn attached_values_are_read_from_the_whole_word() {
        assert_eq!(
            refused(&["--unix", "/s", "-l=2"]),
            ArgsError::Locality("-l=2".into())
        );
        assert_eq!(refused(&["--unix", "/s", "--info=1"]), ArgsError::InfoFlags);
        assert_eq!(refused(&["-b=5"]), ArgsError::BufferSize("-b=5".into()));
        assert_eq!(run(&["--unix=/s", "-c"]).target, unix("/s"));
    }

    #[test]
    fn value_errors_stop_the_scan_in_order() {
        assert_eq!(
            refused(&["-l", "x", "-c", "-c"]),
            ArgsError::Locality("x".into())
        );
        assert_eq!(refused(&["-c", "-c", "-l", "x"]), ArgsError::OnlyOneCommand);
        assert_eq!(refused(&["-c", "--c"]), ArgsError::OnlyOneCommand);
        assert_eq!(refused(&["-l", "5"]), ArgsError::LocalityRange);
        assert_eq!(refused(&["-l", "-1"]), ArgsError::LocalityRange);
        assert_eq!(refused(&["-l", "4294967297"]), ArgsError::LocalityRange);
        assert_eq!(refused(&["-l", ""]), ArgsError::Locality(String::new()));
        assert_eq!(refused(&["--info", "1x"]), ArgsError::InfoFlags);
        assert_eq!(refused(&["--info", " "]), ArgsError::InfoFlags);
        assert_eq!(
            refused(&["--info", "99999999999999999999999"]),
            ArgsError::InfoFlags
        );
        assert_eq!(
            refused(&["--lock-storage", "-1"]),
            ArgsError::Retries("-1".into())
        );
        assert_eq!(
            refused(&["--tcp", ":abc", "-c"]),
            ArgsError::Port(PortError::Invalid("abc".into()))
        );
    }

    #[test]
    fn scan_errors_are_warnings() {
        let parsed = parse_words(&["--unix", "/s", "-c", "--bogus", "-l"]);
        assert_eq!(
            parsed.warnings,
            [
                "swtpm_ioctl: unrecognized option '--bogus'",
                "swtpm_ioctl: option '-l' requires an argument"
            ]
        );
        assert!(matches!(parsed.outcome, Outcome::Run(_)));
        let parsed = parse_words(&["-h"]);
        assert_eq!(
            parsed.warnings,
            ["swtpm_ioctl: option '-h' requires an argument"]
        );
        assert_eq!(parsed.outcome, Outcome::Refused(ArgsError::NoCommand));
    }

    #[test]
    fn help_and_version_act_where_they_stand() {
        assert_eq!(parse_words(&["-help", "-c", "-c"]).outcome, Outcome::Help);
        assert_eq!(parse_words(&["--hel"]).outcome, Outcome::Help);
        assert_eq!(parse_words(&["-ve"]).outcome, Outcome::Version);
        assert_eq!(
            refused(&["-c", "-c", "-version"]),
            ArgsError::OnlyOneCommand
        );
    }

    #[test]
    fn targets_and_their_precedence() {
        assert_eq!(refused(&[]), ArgsError::NoCommand);
        assert_eq!(refused(&["-c"]), ArgsError::MissingDevice);
        assert_eq!(
            run(&["-c", "/dev/x"]).target,
            Target::Device("/dev/x".into())
        );
        assert_eq!(run(&["/d", "-c", "--unix", "/s"]).target, unix("/s"));
        assert_eq!(
            run(&["--unix", "/a", "--unix", "/s", "-c"]).target,
            unix("/s")
        );
        let tcp = Target::Tcp(TcpTarget {
            host: "127.0.0.1".into(),
            port: 1,
        });
        assert_eq!(run(&["--tcp", ":1", "--unix", "/s", "-c"]).target, tcp);
        assert_eq!(run(&["--unix", "/s", "--tcp", ":1", "-c"]).target, tcp);
        assert_eq!(
            run(&["--unix", "/s", "--tpm-device", "/d", "-c"]).target,
            Target::Device("/d".into())
        );
        let default_port = run(&["--tcp", "h", "-c"]).target;
        assert_eq!(
            default_port,
            Target::Tcp(TcpTarget {
                host: "h".into(),
                port: 6546
            })
        );
    }

    #[test]
    fn never_panics_on_any_pair_of_words() {
        use std::os::unix::ffi::OsStringExt;
        let vocabulary: Vec<OsString> = [
            "-c",
            "--c",
            "-l",
            "-l=9",
            "--save",
            "--load",
            "permanent",
            "-",
            "--",
            "-h",
            "--tcp",
            ":",
            "::",
            "--tpm-device",
            "--unix",
            "-b",
            "--info",
            "-1",
            "",
            "--lock-storage",
            "-x",
            "=",
            "-=",
            "--=x",
            "-t",
        ]
        .iter()
        .map(OsString::from)
        .chain([
            OsString::from_vec(vec![b'-', 0xff]),
            OsString::from_vec(vec![0xfe]),
        ])
        .collect();
        for first in &vocabulary {
            for second in &vocabulary {
                for third in &vocabulary {
                    let argv = [
                        OsString::from("p"),
                        first.clone(),
                        second.clone(),
                        third.clone(),
                    ];
                    let _ = parse(&argv);
                }
            }
        }
        assert_eq!(parse(&[]).outcome, Outcome::Refused(ArgsError::NoCommand));
    }

    #[test]
    fn save_and_load_take_a_file_word() {
        assert_eq!(
            run(&["--save", "permanent", "/f", "--unix", "/s"]).action,
            Action::Save {
                blob_type: "permanent".into(),
                file: "/f".into()
            }
        );
        // The file word is taken, so it is not the device.
        assert_eq!(
            refused(&["--load", "volatile", "/f"]),
            ArgsError::MissingDevice
        );
        assert_eq!(
            refused(&["--save", "permanent"]),
            ArgsError::MissingFilename("--save")
        );
        assert_eq!(
            refused(&["--load", "permanent", "-x"]),
            ArgsError::MissingFilename("--load")
        );
        // The type is checked only when the command runs.
        assert!(matches!(
            run(&["--unix", "/s", "--save", "bogus", "f"]).action,
            Action::Save { .. }
        ));
    }
}
