//! The help texts of `swtpm --help` and `swtpm socket|chardev --help` (cli.md §1, §3.17).
//!
//! Layout as swtpm's: each option's syntax at column 0, its description either on the same
//! line after ` : ` (short syntax) or on the next line after 17 spaces and `: `, further
//! lines indented to the description's column. Scripts look for option names in these
//! texts (QEMU's tests need `--tpm2` in `swtpm socket --help`), so every accepted option is
//! listed, also those this build does not support yet.

use super::Frontend;

/// Syntax that fits in this many columns shares its line with the description.
const SYNTAX_COLUMNS: usize = 16;
/// Where ` : ` stands when the syntax has a line of its own.
const CONTINUATION_INDENT: usize = SYNTAX_COLUMNS + 1;
/// Where further description lines start.
const TEXT_INDENT: usize = CONTINUATION_INDENT + 2;

const NOT_SUPPORTED_YET: &str = "(not supported by this build yet)";

/// `swtpm --help` (and the text shown after an unknown interface type).
pub fn usage(program: &str) -> String {
    format!(
        "A virtual TPM 1.2 and 2.0 for QEMU, libvirt and other users, served on a socket\n\
         or a character device.\n\
         \n\
         Usage: {program} socket|chardev [options]\n\
         \x20      {program} -v|--version\n\
         \n\
         To list the options of an interface, run '{program} socket --help' or\n\
         '{program} chardev --help'. To print the version, run '{program} --version'.\n"
    )
}

/// `swtpm <frontend> --help`: the options of `frontend`.
pub fn frontend_help(frontend: Frontend, program: &str) -> String {
    let mut out = format!(
        "Usage: {program} {} [options]\n\nThe options of this interface are:\n\n",
        frontend.name()
    );
    for entry in ENTRIES
        .iter()
        .filter(|entry| entry.shown_in.includes(frontend))
    {
        push_entry(&mut out, entry);
    }
    out.push('\n');
    out
}

fn push_entry(out: &mut String, entry: &Entry) {
    let not_supported: &[&str] = if entry.supported {
        &[]
    } else {
        &[NOT_SUPPORTED_YET]
    };
    let mut lines = entry.text.iter().chain(not_supported);
    let first = lines.next().copied().unwrap_or_default();
    if entry.syntax.len() <= SYNTAX_COLUMNS {
        out.push_str(&format!("{:<SYNTAX_COLUMNS$} : {first}\n", entry.syntax));
    } else {
        out.push_str(&format!(
            "{}\n{:CONTINUATION_INDENT$}: {first}\n",
            entry.syntax, ""
        ));
    }
    for line in lines {
        out.push_str(&format!("{:TEXT_INDENT$}{line}\n", ""));
    }
}

#[derive(Clone, Copy)]
enum ShownIn {
    Both,
    Socket,
    Chardev,
}

impl ShownIn {
    fn includes(self, frontend: Frontend) -> bool {
        match self {
            ShownIn::Both => true,
            ShownIn::Socket => frontend == Frontend::Socket,
            ShownIn::Chardev => frontend == Frontend::Chardev,
        }
    }
}

struct Entry {
    syntax: &'static str,
    text: &'static [&'static str],
    shown_in: ShownIn,
    /// False for options that are accepted but refused at start by this build.
    supported: bool,
}

const fn entry(syntax: &'static str, shown_in: ShownIn, text: &'static [&'static str]) -> Entry {
    Entry {
        syntax,
        text,
        shown_in,
        supported: true,
    }
}

const fn not_yet(syntax: &'static str, text: &'static [&'static str]) -> Entry {
    Entry {
        syntax,
        text,
        shown_in: ShownIn::Both,
        supported: false,
    }
}

const ENTRIES: &[Entry] = &[
    entry(
        "-p|--port <port>",
        ShownIn::Socket,
        &[
            "serve TPM commands on this TCP port of 127.0.0.1 and close the",
            "connection after every response; short for",
            "--server type=tcp,port=<port>,disconnect",
        ],
    ),
    entry(
        "-c|--chardev <device>",
        ShownIn::Chardev,
        &[
            "read TPM commands from this character device and write the",
            "responses to it; the TPM stops when the device hangs up",
        ],
    ),
    entry(
        "-f|--fd <fd>",
        ShownIn::Both,
        &[
            "take TPM commands from this inherited file descriptor (a connected",
            "socket or a character device, not a plain file); the TPM stops",
            "when the other end closes it",
        ],
    ),
    entry(
        "-t|--terminate",
        ShownIn::Socket,
        &["stop the TPM when the data connection closes"],
    ),
    entry(
        "-d|--daemon",
        ShownIn::Both,
        &["go to the background once the TPM is ready to serve"],
    ),
    entry(
        "--vtpm-proxy",
        ShownIn::Chardev,
        &[
            "create a Linux vTPM proxy device (/dev/tpm<N>) and serve it; this",
            "implies --flags not-need-init,startup-clear (override with",
            "--flags) and --locality allow-set-locality",
        ],
    ),
    entry(
        "--server [type=tcp][,port=<port>[,bindaddr=<address>[,ifname=<name>]]][,fd=<fd>][,disconnect]",
        ShownIn::Socket,
        &[
            "the TCP data channel for TPM commands: listen on port (default: the",
            "TPM_PORT environment variable) at bindaddr (default 127.0.0.1; an",
            "IPv6 link-local address needs ifname), or use fd, an inherited",
            "connected socket; disconnect closes the connection after every",
            "response",
        ],
    ),
    entry(
        "--server type=unixio[,path=<path>][,fd=<fd>][,mode=<0...>][,uid=<uid>][,gid=<gid>]",
        ShownIn::Socket,
        &[
            "the UNIX socket data channel: create a listening socket at path",
            "with permission bits mode (octal, default 0770) and owner uid and",
            "group gid (numbers or names), or accept on fd, an inherited",
            "listening socket",
        ],
    ),
    entry(
        "--ctrl type=[unixio|tcp][,path=<path>][,port=<port>[,bindaddr=<address>[,ifname=<name>]]][,fd=<fd>|clientfd=<fd>][,mode=<0...>][,uid=<uid>][,gid=<gid>][,terminate]",
        ShownIn::Both,
        &[
            "the control channel (swtpm's control protocol): a UNIX socket at",
            "path, or TCP on port at bindaddr (default 127.0.0.1); fd is an",
            "inherited listening socket, clientfd an inherited connected UNIX",
            "socket; mode, uid and gid set the permission bits (octal, default",
            "0770), owner and group of a socket created at path; terminate",
            "stops the TPM when the control client disconnects",
        ],
    ),
    entry(
        "--tpmstate dir=<dir>|backend-uri=<uri>[,mode=<0...>][,lock[=true|false]]",
        ShownIn::Both,
        &[
            "where the TPM keeps its state: the existing directory dir, or a",
            "URI: dir://<path> (file://<path>, one file or block device, is not",
            "supported by this build yet); mode gives the state files'",
            "permission bits (octal); lock takes a lock on the storage (always",
            "on for directories: lock=false is not supported by this build",
            "yet); without this option the TPM_PATH environment variable names",
            "the directory",
        ],
    ),
    entry(
        "--log [file=<path>|fd=<fd>][,level=<n>][,prefix=<string>][,truncate]",
        ShownIn::Both,
        &[
            "where log messages go: a file (appended to, or emptied first with",
            "truncate; file=- turns logging off) or an inherited descriptor;",
            "level 1 shows errors, higher levels more detail, 5 and above add",
            "libtpms' own messages; prefix starts every line",
        ],
    ),
    entry(
        "--pid file=<path>|fd=<fd>",
        ShownIn::Both,
        &[
            "write the process id to this file (or inherited file descriptor",
            "of a regular file) once ready, and remove it at exit",
        ],
    ),
    entry(
        "--locality [reject-locality-4][,allow-set-locality]",
        ShownIn::Both,
        &[
            "reject-locality-4 refuses locality 4; allow-set-locality accepts",
            "the in-band command that sets the locality on the data channel",
        ],
    ),
    entry(
        "--flags [not-need-init][,startup-clear|startup-state|startup-deactivated|startup-none][,disable-auto-shutdown]",
        ShownIn::Both,
        &[
            "not-need-init starts the TPM at once instead of waiting for the",
            "INIT control command; startup-<type> also sends TPM_Startup of",
            "that type first (and implies not-need-init), startup-none sends",
            "none; disable-auto-shutdown never sends TPM2_Shutdown on its own",
        ],
    ),
    entry(
        "--tpm2",
        ShownIn::Both,
        &["be a TPM 2.0 (without it: a TPM 1.2)"],
    ),
    entry(
        "--key file=<path>|fd=<fd>[,mode=aes-cbc|aes-128-cbc|aes-256-cbc][,format=hex|binary][,remove[=true|false]]",
        ShownIn::Both,
        &["encrypt the state files with this AES key"],
    ),
    entry(
        "--key pwdfile=<path>|pwdfd=<fd>[,mode=aes-cbc|aes-128-cbc|aes-256-cbc][,kdf=sha512|pbkdf2][,remove[=true|false]]",
        ShownIn::Both,
        &["encrypt the state files with a key derived from a passphrase"],
    ),
    entry(
        "--migration-key file=<path>|fd=<fd>[,mode=aes-cbc|aes-128-cbc|aes-256-cbc][,format=hex|binary][,remove[=true|false]]",
        ShownIn::Both,
        &["encrypt the state blobs handed out for migration with this AES key"],
    ),
    entry(
        "--migration-key pwdfile=<path>|pwdfd=<fd>[,mode=aes-cbc|aes-128-cbc|aes-256-cbc][,kdf=sha512|pbkdf2][,remove[=true|false]]",
        ShownIn::Both,
        &["the same with a key derived from a passphrase"],
    ),
    not_yet(
        "--migration [incoming][,release-lock-outgoing]",
        &[
            "incoming: take the storage lock only when the migrated state",
            "arrives; release-lock-outgoing: drop it once the state was fetched",
        ],
    ),
    not_yet(
        "-r|--runas <user>",
        &["switch to this user (name or uid) after start-up"],
    ),
    not_yet(
        "-R|--chroot <dir>",
        &["change the root directory to dir at start-up"],
    ),
    not_yet(
        "--seccomp action=none|kill|log",
        &["what to do with forbidden system calls once running"],
    ),
    not_yet(
        "--profile name=<name>|profile=<json>|file=<path>|fd=<fd>[,remove-disabled=check|fips-host]",
        &["the TPM 2 profile to create a new TPM with"],
    ),
    not_yet("--print-profiles", &["print the TPM 2 profiles and exit"]),
    entry(
        "--print-capabilities",
        ShownIn::Both,
        &["print the features of this program as JSON and exit"],
    ),
    entry(
        "--print-states",
        ShownIn::Both,
        &["print as JSON which state blobs --tpmstate holds and exit"],
    ),
    entry(
        "--print-info <flags>",
        ShownIn::Both,
        &[
            "print the TPM information selected by flags (a number, as in the",
            "GET_INFO control command) as JSON and exit",
        ],
    ),
    entry("-h|--help", ShownIn::Both, &["print this text and exit"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_usage_names_the_program_and_interfaces() {
        let text = usage("/usr/bin/swtpm");
        assert!(text.contains("\n\nUsage: /usr/bin/swtpm socket|chardev [options]\n"));
        assert!(text.contains("\n       /usr/bin/swtpm -v|--version\n\n"));
        assert!(text.contains("--help"));
        assert!(text.ends_with('\n'));
        // swtpm's test suite decides from this text whether CUSE tests can run.
        assert!(!text.to_lowercase().contains("cuse"));
    }

    #[test]
    fn socket_help_layout() {
        let text = frontend_help(Frontend::Socket, "swtpm");
        assert!(text.starts_with("Usage: swtpm socket [options]\n\n"));
        assert!(text.contains("\n-p|--port <port> : serve TPM commands"));
        assert!(text.contains("\n-t|--terminate   : stop the TPM"));
        assert!(text.contains("\n--tpm2           : be a TPM 2.0"));
        assert!(text.contains("\n--ctrl type=[unixio|tcp]"));
        assert!(text.contains("\n                 : the control channel"));
        assert!(text.contains("\n                   path, or TCP on port"));
        assert!(text.ends_with("-h|--help        : print this text and exit\n\n"));
        assert!(!text.contains("--vtpm-proxy"));
        assert!(!text.contains("--chardev"));
    }

    #[test]
    fn chardev_help_has_its_own_options() {
        let text = frontend_help(Frontend::Chardev, "swtpm");
        assert!(text.starts_with("Usage: swtpm chardev [options]\n\n"));
        for option in [
            "-c|--chardev",
            "--vtpm-proxy",
            "-f|--fd",
            "--ctrl",
            "--tpm2",
        ] {
            assert!(text.contains(option), "{option}");
        }
        for socket_only in ["--server", "-p|--port", "--terminate\n", "-t|"] {
            assert!(!text.contains(socket_only), "{socket_only}");
        }
    }

    #[test]
    fn unsupported_options_are_marked() {
        let text = frontend_help(Frontend::Socket, "swtpm");
        let marked = text.matches(NOT_SUPPORTED_YET).count();
        assert_eq!(
            marked,
            ENTRIES.iter().filter(|entry| !entry.supported).count()
        );
        let entry_of = |start: &str| {
            let rest = text.split(start).nth(1).unwrap();
            rest.split("\n--").next().unwrap().to_owned()
        };
        assert!(entry_of("\n--migration [").contains(NOT_SUPPORTED_YET));
        assert!(!entry_of("\n--key file=").contains(NOT_SUPPORTED_YET));
    }

    #[test]
    fn lines_are_indented_consistently() {
        for frontend in [Frontend::Socket, Frontend::Chardev] {
            let text = frontend_help(frontend, "swtpm");
            let options = text.split("\n\n").nth(2).unwrap();
            for line in options.lines() {
                let starts_entry = line.starts_with('-');
                let continues = line.starts_with(&" ".repeat(CONTINUATION_INDENT));
                assert!(starts_entry || continues, "{line:?}");
                assert!(!line.ends_with(' '), "{line:?}");
            }
        }
    }
}
