//! The command-line scanner of swtpm_ioctl and swtpm_bios: glibc's `getopt_long_only`
//! with only long options, rebuilt because clap cannot express it. Single-dash words are
//! long options too (`-c`, `-stop`, `-version`), any unambiguous prefix names an option
//! (`--vers`), an exact name beats a longer one it is a prefix of (`-i` is not `-info`),
//! a value comes after `=` or as the next word (even if that starts with `-`), and errors
//! are reported one by one while scanning goes on — the tools decide what an error means.
//! The messages are glibc's, so scripts that match them keep working. Pure.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Whether an option takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    None,
    Required,
}

/// One entry of the option table.
#[derive(Clone, Copy, Debug)]
pub struct LongOption<Id> {
    /// Without dashes.
    pub name: &'static str,
    pub arg: Arg,
    pub id: Id,
}

impl<Id> LongOption<Id> {
    /// For option tables: `LongOption::new("tcp", Arg::Required, Opt::Tcp)`.
    pub const fn new(name: &'static str, arg: Arg, id: Id) -> LongOption<Id> {
        LongOption { name, arg, id }
    }
}

/// Where an option's value was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `--name=value`.
    Attached(&'a OsStr),
    /// `--name value`.
    NextWord(&'a OsStr),
}

impl<'a> Value<'a> {
    pub fn text(self) -> &'a OsStr {
        match self {
            Value::Attached(text) | Value::NextWord(text) => text,
        }
    }
}

/// What the scanner found next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a, Id> {
    Option {
        id: Id,
        /// The word the option was written in, e.g. `-c`, `--sto` or `--info=1`.
        word: &'a OsStr,
        value: Option<Value<'a>>,
    },
    /// A word that is not an option (getopt moves these to the end of argv).
    Operand(&'a OsStr),
    /// A bad option; the message is glibc's, starting with the program name.
    Error(String),
}

/// Scans `words` (argv without the program name) against `options`.
pub struct Scanner<'a, Id> {
    program: &'a str,
    options: &'a [LongOption<Id>],
    words: &'a [&'a OsStr],
    next: usize,
    /// After `--` every word is an operand.
    only_operands: bool,
}

impl<'a, Id: Copy> Scanner<'a, Id> {
    pub fn new(program: &'a str, options: &'a [LongOption<Id>], words: &'a [&'a OsStr]) -> Self {
        Scanner {
            program,
            options,
            words,
            next: 0,
            only_operands: false,
        }
    }

    /// The word the scanner would look at next.
    pub fn peek_word(&self) -> Option<&'a OsStr> {
        self.words.get(self.next).copied()
    }

    /// Consumes the next word (swtpm_ioctl's `--save <type> <file>` takes a second word).
    pub fn skip_word(&mut self) {
        self.next = (self.next + 1).min(self.words.len());
    }

    fn option_event(&mut self, word: &'a OsStr) -> Event<'a, Id> {
        let bytes = word.as_bytes();
        let prefix_len = if bytes.starts_with(b"--") { 2 } else { 1 };
        let prefix = &"--"[..prefix_len];
        let rest = &bytes[prefix_len..];
        let (name, attached) = match rest.iter().position(|&b| b == b'=') {
            Some(eq) => (&rest[..eq], Some(OsStr::from_bytes(&rest[eq + 1..]))),
            None => (rest, None),
        };
        let found = match self.lookup(name) {
            Lookup::Found(option) => option,
            Lookup::Unknown => {
                return Event::Error(format!(
                    "{}: unrecognized option '{}'",
                    self.program,
                    word.to_string_lossy()
                ));
            }
            Lookup::Ambiguous(candidates) => {
                let listed: String = candidates
                    .iter()
                    .map(|option| format!(" '{prefix}{}'", option.name))
                    .collect();
                return Event::Error(format!(
                    "{}: option '{}' is ambiguous; possibilities:{listed}",
                    self.program,
                    word.to_string_lossy()
                ));
            }
        };
        let value = match (found.arg, attached) {
            (Arg::None, Some(_)) => {
                return Event::Error(format!(
                    "{}: option '{prefix}{}' doesn't allow an argument",
                    self.program, found.name
                ));
            }
            (Arg::None, None) => None,
            (Arg::Required, Some(text)) => Some(Value::Attached(text)),
            (Arg::Required, None) => match self.peek_word() {
                Some(text) => {
                    self.skip_word();
                    Some(Value::NextWord(text))
                }
                None => {
                    return Event::Error(format!(
                        "{}: option '{prefix}{}' requires an argument",
                        self.program, found.name
                    ));
                }
            },
        };
        Event::Option {
            id: found.id,
            word,
            value,
        }
    }

    fn lookup(&self, name: &[u8]) -> Lookup<'a, Id> {
        if let Some(exact) = self.options.iter().find(|o| o.name.as_bytes() == name) {
            return Lookup::Found(exact);
        }
        let candidates: Vec<&'a LongOption<Id>> = self
            .options
            .iter()
            .filter(|o| o.name.as_bytes().starts_with(name))
            .collect();
        match candidates.as_slice() {
            [] => Lookup::Unknown,
            [only] => Lookup::Found(only),
            _ => Lookup::Ambiguous(candidates),
        }
    }
}

enum Lookup<'a, Id> {
    Found(&'a LongOption<Id>),
    Unknown,
    Ambiguous(Vec<&'a LongOption<Id>>),
}

impl<'a, Id: Copy> Iterator for Scanner<'a, Id> {
    type Item = Event<'a, Id>;

    fn next(&mut self) -> Option<Event<'a, Id>> {
        let word = self.peek_word()?;
        self.skip_word();
        let bytes = word.as_bytes();
        if self.only_operands || bytes.len() < 2 || bytes[0] != b'-' {
            return Some(Event::Operand(word));
        }
        if bytes == b"--" {
            self.only_operands = true;
            return self.next();
        }
        Some(self.option_event(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Id {
        TpmDevice,
        Tcp,
        I,
        Info,
        Stop,
        S,
        Save,
    }

    const OPTIONS: &[LongOption<Id>] = &[
        LongOption {
            name: "tpm-device",
            arg: Arg::Required,
            id: Id::TpmDevice,
        },
        LongOption {
            name: "tcp",
            arg: Arg::Required,
            id: Id::Tcp,
        },
        LongOption {
            name: "i",
            arg: Arg::None,
            id: Id::I,
        },
        LongOption {
            name: "info",
            arg: Arg::Required,
            id: Id::Info,
        },
        LongOption {
            name: "stop",
            arg: Arg::None,
            id: Id::Stop,
        },
        LongOption {
            name: "s",
            arg: Arg::None,
            id: Id::S,
        },
        LongOption {
            name: "save",
            arg: Arg::Required,
            id: Id::Save,
        },
    ];

    fn scan(words: &[&str]) -> Vec<Event<'static, Id>> {
        let words: Vec<&'static OsStr> = words
            .iter()
            .map(|w| OsStr::new(Box::leak(w.to_string().into_boxed_str())))
            .collect();
        let words: &'static [&'static OsStr] = Box::leak(words.into_boxed_slice());
        Scanner::new("prog", OPTIONS, words).collect()
    }

    fn opt(id: Id, word: &'static str, value: Option<Value<'static>>) -> Event<'static, Id> {
        Event::Option {
            id,
            word: OsStr::new(word),
            value,
        }
    }

    fn next_word(text: &'static str) -> Option<Value<'static>> {
        Some(Value::NextWord(OsStr::new(text)))
    }

    #[test]
    fn exact_names_win_over_longer_ones() {
        assert_eq!(scan(&["-i"]), [opt(Id::I, "-i", None)]);
        assert_eq!(scan(&["-in", "1"]), [opt(Id::Info, "-in", next_word("1"))]);
        assert_eq!(scan(&["-s"]), [opt(Id::S, "-s", None)]);
        assert_eq!(scan(&["--sto"]), [opt(Id::Stop, "--sto", None)]);
    }

    #[test]
    fn values_attached_or_next_even_with_a_dash() {
        assert_eq!(
            scan(&["--info=0x1"]),
            [opt(
                Id::Info,
                "--info=0x1",
                Some(Value::Attached(OsStr::new("0x1")))
            )]
        );
        assert_eq!(
            scan(&["-info", "-1"]),
            [opt(Id::Info, "-info", next_word("-1"))]
        );
        assert_eq!(
            scan(&["--tpm-dev=/x"]),
            [opt(
                Id::TpmDevice,
                "--tpm-dev=/x",
                Some(Value::Attached(OsStr::new("/x")))
            )]
        );
    }

    #[test]
    fn glibc_messages() {
        assert_eq!(
            scan(&["-t"]),
            [Event::Error(
                "prog: option '-t' is ambiguous; possibilities: '-tpm-device' '-tcp'".into()
            )]
        );
        assert_eq!(
            scan(&["--bogus=1", "-x"]),
            [
                Event::Error("prog: unrecognized option '--bogus=1'".into()),
                Event::Error("prog: unrecognized option '-x'".into())
            ]
        );
        assert_eq!(
            scan(&["--sto=x"]),
            [Event::Error(
                "prog: option '--stop' doesn't allow an argument".into()
            )]
        );
        assert_eq!(
            scan(&["-in"]),
            [Event::Error(
                "prog: option '-info' requires an argument".into()
            )]
        );
    }

    #[test]
    fn operands_and_double_dash() {
        assert_eq!(
            scan(&["dev", "-", "-s", "--", "-i"]),
            [
                Event::Operand(OsStr::new("dev")),
                Event::Operand(OsStr::new("-")),
                opt(Id::S, "-s", None),
                Event::Operand(OsStr::new("-i")),
            ]
        );
    }

    #[test]
    fn second_word_for_save() {
        let words = [
            OsStr::new("--save"),
            OsStr::new("permanent"),
            OsStr::new("f"),
            OsStr::new("-s"),
        ];
        let mut scanner = Scanner::new("prog", OPTIONS, &words);
        assert_eq!(
            scanner.next(),
            Some(opt(Id::Save, "--save", next_word("permanent")))
        );
        assert_eq!(scanner.peek_word(), Some(OsStr::new("f")));
        scanner.skip_word();
        assert_eq!(scanner.next(), Some(opt(Id::S, "-s", None)));
        assert_eq!(scanner.next(), None);
        scanner.skip_word();
        assert_eq!(scanner.peek_word(), None);
    }

    #[test]
    fn never_panics_on_odd_words() {
        let odd: Vec<&OsStr> = [&b"-\xff"[..], b"--\xff=\xfe", b"-=", b"--=", b"---", b"-\0"]
            .iter()
            .map(|b| OsStr::from_bytes(b))
            .collect();
        let events: Vec<_> = Scanner::new("prog", OPTIONS, &odd).collect();
        assert_eq!(events.len(), odd.len());
    }
}
