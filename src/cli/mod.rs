//! The command line of the `swtpm` daemon, compatible with swtpm's (cli.md §1–§9).
//!
//! Parsing happens in two stages, as in swtpm: [`args::parse`] splits argv into flags
//! and raw option strings, and each `key=value` option string is parsed only when the
//! daemon reaches the step that uses it ([`options`]), so that for example
//! `--print-capabilities` works whatever `--tpmstate` says.

pub mod args;
pub mod capabilities;
pub mod help;
pub mod options;

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::state::key::{Kdf, KeyFormat, KeySize};
use crate::tpm::StartupType;

/// What `swtpm <argv...>` asks for.
#[derive(Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "made once per process and matched at once; boxing would only add noise"
)]
pub enum Invocation {
    /// Print this text on stdout and exit 0 (`-h`, `--help`).
    Help(String),
    /// Print the version line and exit 0 (`-v`, `--version`).
    Version,
    Run(FrontendArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    Socket,
    Chardev,
}

impl Frontend {
    /// The sub-command that selects this front end (`swtpm socket ...`).
    pub fn name(self) -> &'static str {
        match self {
            Frontend::Socket => "socket",
            Frontend::Chardev => "chardev",
        }
    }
}

/// The options of `swtpm socket|chardev` as given. `key=value` options stay raw strings
/// until [`options`] parses them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FrontendArgs {
    pub frontend: Option<Frontend>,
    pub tpm2: bool,
    pub daemon: bool,
    /// `-t/--terminate` (socket only).
    pub terminate: bool,
    pub print_capabilities: bool,
    pub print_states: bool,
    /// `--print-info <flags>`, already parsed (0 counts as absent, as in swtpm).
    pub print_info: Option<u32>,
    /// `--server ...` or `-p` (which becomes [`DataArg::Port`]); the last one given wins.
    pub server: Option<DataArg>,
    /// `-f/--fd`: an inherited, connected data channel (already checked while parsing).
    pub fd: Option<RawFd>,
    /// `-c/--chardev <path>` (chardev only).
    pub chardev: Option<PathBuf>,
    /// `--vtpm-proxy` (chardev only).
    pub vtpm_proxy: bool,
    pub ctrl: Option<String>,
    pub tpmstate: Option<String>,
    pub log: Option<String>,
    pub pid: Option<String>,
    pub locality: Option<String>,
    pub flags: Option<String>,
    pub key: Option<String>,
    pub migration_key: Option<String>,
    /// `-r/--runas <user>`: a user name or number.
    pub runas: Option<String>,
    /// `-R/--chroot <path>`.
    pub chroot: Option<PathBuf>,
    pub seccomp: Option<String>,
    /// `--migration [incoming][,release-lock-outgoing]`.
    pub migration: Option<String>,
    /// Options accepted on the command line but refused at start until they are built:
    /// (option name, value), e.g. `("--key", "file=...")`.
    pub not_yet_supported: Vec<(&'static str, String)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DataArg {
    /// `--server <options>`.
    Server(String),
    /// `-p <port>`: `--server type=tcp,disconnect` on that port.
    Port(u16),
}

/// Why a command line or an option string was refused. Displayed as swtpm phrases it
/// (e.g. `Error parsing tpmstate options: Unknown option 'x'`); the daemon exits 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// argv-level problem; `usage` is the front end's help text for stderr.
    #[error("{message}")]
    Usage { message: String, usage: String },
    /// A `key=value` option string: `what` is `tpmstate`, `ctrl`, `server`, `logging`,
    /// `pid`, `locality`, `flags`, ...
    #[error("Error parsing {what} options: {message}")]
    Option { what: &'static str, message: String },
    /// Any other refused value, with swtpm's message.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    File(PathBuf),
    Fd(RawFd),
    /// `file=-`: no logging at all.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub target: LogTarget,
    /// Messages indented by k spaces are printed when k < level; level ≥ 5 adds libtpms.
    pub level: u32,
    /// `None`: no prefix (any `--log` clears swtpm's default `swtpm: ` prefix).
    pub prefix: Option<String>,
    pub truncate: bool,
}

/// A user or group given by number or by name (names are looked up when used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Id(u32),
    Name(String),
}

/// A listening socket to create or inherit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    UnixPath {
        path: PathBuf,
        mode: u32,
        uid: Option<Owner>,
        gid: Option<Owner>,
    },
    /// An inherited listening UNIX socket.
    UnixFd(RawFd),
    Tcp {
        bindaddr: IpAddr,
        port: u16,
        ifname: Option<String>,
    },
    /// An inherited listening TCP socket.
    TcpFd(RawFd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlChannel {
    Listen(ListenSpec),
    /// `clientfd=`: an inherited, connected UNIX socket (swtpm_setup's socketpair).
    UnixClientFd(RawFd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrlOptions {
    pub channel: CtrlChannel,
    /// `terminate`: exit when the control client disconnects.
    pub terminate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOptions {
    Listen {
        spec: ListenSpec,
        disconnect: bool,
    },
    /// `type=tcp,fd=N`: an inherited, already connected data stream.
    ConnectedFd(RawFd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackendSpec {
    /// `dir=`, `backend-uri=dir://`, or `TPM_PATH`.
    Dir(PathBuf),
    /// `backend-uri=file://PATH`: one linear file or block device.
    File(PathBuf),
    /// Any other URI: accepted by the parser, refused when storage is first used.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmStateOptions {
    pub backend: StateBackendSpec,
    /// `mode=`: exact permission bits of state files.
    pub mode: Option<u32>,
    /// `lock=`: `None` = the backend's default.
    pub lock: Option<bool>,
}

/// `--migration [incoming][,release-lock-outgoing]` (§3.9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationOptions {
    /// Lock the storage only when the state arrives or before the first TPM command.
    pub incoming: bool,
    /// Release the storage lock once the savestate blob has been fetched.
    pub release_lock_outgoing: bool,
}

/// Where `--key` / `--migration-key` material comes from (precedence file > fd >
/// pwdfile > pwdfd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `file=`: a key file, hex or binary.
    File(PathBuf),
    /// `fd=`: an inherited descriptor to read the key from.
    Fd(RawFd),
    /// `pwdfile=`: a file holding a passphrase.
    PassphraseFile(PathBuf),
    /// `pwdfd=`: an inherited descriptor to read a passphrase from.
    PassphraseFd(RawFd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOptions {
    pub source: KeySource,
    /// `format=`: how a key file or key fd is read (passphrases ignore it).
    pub format: KeyFormat,
    /// `mode=`: AES-128 or AES-256.
    pub size: KeySize,
    /// `kdf=`: how a passphrase becomes a key (key files ignore it).
    pub kdf: Kdf,
    /// `remove`: delete the key or passphrase file once the key was made from it.
    pub remove: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidOptions {
    File(PathBuf),
    Fd(RawFd),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalityOptions {
    pub reject_locality_4: bool,
    pub allow_set_locality: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagOptions {
    pub not_need_init: bool,
    pub startup: StartupRequest,
    pub disable_auto_shutdown: bool,
}

/// The `startup-*` part of `--flags`; `--vtpm-proxy` starts with Clear unless told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartupRequest {
    #[default]
    Unspecified,
    /// `startup-none`.
    Nothing,
    Send(StartupType),
}
