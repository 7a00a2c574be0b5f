//! Parsers for swtpm's `key=value,...` option strings (cli.md §2), one per option:
//! `--tpmstate` (§3.2), `--log` (§3.3), `--key` and `--migration-key` (§3.4, §3.5),
//! `--pid` (§3.6), `--locality` (§3.7), `--flags` (§3.8), `--server` and `-p` (§4.1,
//! §4.3), `--ctrl` (§4.2).
//!
//! Pure: no I/O and no system calls. User and group names stay [`Owner::Name`] (looked up
//! when used); the environment variables swtpm consults (`TPM_PORT`, `TPM_PATH`) are passed
//! in by the caller. Every parser returns an error for any input it does not accept and
//! never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::{
    CliError, CtrlChannel, CtrlOptions, DataArg, FlagOptions, KeyOptions, KeySource, ListenSpec,
    LocalityOptions, LogOptions, LogTarget, MigrationOptions, Owner, PidOptions, ServerOptions,
    StartupRequest, StateBackendSpec, TpmStateOptions,
};
use crate::sandbox::seccomp;
use crate::state::key::{Kdf, KeyFormat, KeySize};
use crate::tpm::StartupType;

/// Permission bits of a UNIX socket created for `--ctrl`/`--server` without `mode=`.
const DEFAULT_SOCKET_MODE: u32 = 0o770;
/// The address a TCP socket is bound to without `bindaddr=`.
const DEFAULT_BIND_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The highest value `mode=` accepts.
const MAX_MODE: i64 = 0o777;

// ---------------------------------------------------------------------------------------
// The options
// ---------------------------------------------------------------------------------------

/// `--tpmstate dir=<dir>|backend-uri=<uri>[,mode=<0...>][,lock[=bool]]` (§3.2).
pub fn parse_tpmstate(opts: &str) -> Result<TpmStateOptions, CliError> {
    let mut dir = None;
    let mut uri = None;
    let mut mode = None;
    let mut lock = None;
    for_each_param("tpmstate", opts, |param| {
        match param.key {
            "dir" => keep_first(&mut dir, param.value),
            "backend-uri" => keep_first(&mut uri, param.value),
            "mode" => keep_first(&mut mode, parse_mode(param.value)?),
            "lock" => keep_first(&mut lock, parse_bool(param.value)),
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    })?;
    // `dir` wins over `backend-uri` when both are given.
    let backend = match (dir, uri) {
        (Some(dir), _) => StateBackendSpec::Dir(PathBuf::from(dir)),
        (None, Some(uri)) => backend_from_uri(uri),
        (None, None) => {
            return Err(invalid(
                "The dir or backend-uri parameters is required for the tpmstate option.",
            ));
        }
    };
    Ok(TpmStateOptions {
        backend,
        mode,
        lock,
    })
}

/// The state storage swtpm uses when `--tpmstate` is absent: the directory named by the
/// `TPM_PATH` environment variable, if set. An empty `TPM_PATH` counts as unset (swtpm
/// would use `dir://`, i.e. lock files in `/`).
pub fn tpmstate_from_env(tpm_path: Option<&str>) -> Option<TpmStateOptions> {
    let path = tpm_path.filter(|path| !path.is_empty())?;
    Some(TpmStateOptions {
        backend: StateBackendSpec::Dir(PathBuf::from(path)),
        mode: None,
        lock: None,
    })
}

/// What a `backend-uri=` names: `dir://` and `file://` are known, anything else is kept
/// as given and refused when storage is first used (as swtpm does).
fn backend_from_uri(uri: &str) -> StateBackendSpec {
    if let Some(path) = uri.strip_prefix("dir://") {
        StateBackendSpec::Dir(PathBuf::from(path))
    } else if let Some(path) = uri.strip_prefix("file://") {
        StateBackendSpec::File(PathBuf::from(path))
    } else {
        StateBackendSpec::Unsupported(uri.to_owned())
    }
}

/// `--log [file=<path>|fd=<fd>][,level=<n>][,prefix=<string>][,truncate]` (§3.3).
pub fn parse_log(opts: &str) -> Result<LogOptions, CliError> {
    let mut file = None;
    let mut fd = None;
    let mut level = None;
    let mut prefix = None;
    let mut truncate = None;
    for_each_param("logging", opts, |param| {
        match param.key {
            "file" => keep_first(&mut file, param.value),
            "fd" => keep_first(&mut fd, parse_int(param.value)?),
            "level" => keep_first(&mut level, parse_level(param.value)?),
            "prefix" => keep_first(&mut prefix, param.value),
            "truncate" => keep_first(&mut truncate, parse_bool(param.value)),
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    })?;
    // An fd wins over a file; a negative fd counts as not given.
    let target = match (non_negative(fd), file) {
        (Some(fd), _) => LogTarget::Fd(fd),
        (None, Some("-")) => LogTarget::Disabled,
        (None, Some(file)) => LogTarget::File(PathBuf::from(file)),
        (None, None) => LogTarget::Stderr,
    };
    Ok(LogOptions {
        target,
        // Any --log makes level 0 (given or left out) level 1: it never silences logging.
        level: level.filter(|level| *level != 0).unwrap_or(1),
        prefix: prefix.map(str::to_owned),
        truncate: truncate.unwrap_or(false),
    })
}

/// `--ctrl type=unixio|tcp[,path=..][,port=..[,bindaddr=..[,ifname=..]]][,fd=..|clientfd=..]
/// [,mode=..][,uid=..][,gid=..][,terminate]` (§4.2). `TPM_PORT` is never used here.
pub fn parse_ctrl(opts: &str) -> Result<CtrlOptions, CliError> {
    let mut socket = SocketParams::default();
    let mut clientfd = None;
    let mut terminate = None;
    for_each_param("ctrl", opts, |param| {
        match param.key {
            "clientfd" => keep_first(&mut clientfd, parse_int(param.value)?),
            "terminate" => keep_first(&mut terminate, parse_bool(param.value)),
            _ => socket.accept(param)?,
        }
        Ok(())
    })?;
    let channel = match socket.kind {
        None => return Err(invalid("Missing type parameter for control channel")),
        Some("unixio") => unix_ctrl_channel(socket, non_negative(clientfd))?,
        Some("tcp") => CtrlChannel::Listen(tcp_ctrl_listener(socket)?),
        Some(other) => {
            return Err(invalid(format!(
                "Unsupported control channel type: {other}"
            )));
        }
    };
    Ok(CtrlOptions {
        channel,
        terminate: terminate.unwrap_or(false),
    })
}

/// UnixIO control channel: `fd` > `clientfd` > `path`.
fn unix_ctrl_channel(
    socket: SocketParams<'_>,
    clientfd: Option<i32>,
) -> Result<CtrlChannel, CliError> {
    if let Some(fd) = non_negative(socket.fd) {
        return Ok(CtrlChannel::Listen(ListenSpec::UnixFd(fd)));
    }
    if let Some(fd) = clientfd {
        return Ok(CtrlChannel::UnixClientFd(fd));
    }
    match socket.path {
        Some(path) => Ok(CtrlChannel::Listen(socket.unix_path_spec(path))),
        None => Err(invalid(
            "Missing path and fd options for UnixIO control channel",
        )),
    }
}

/// TCP control channel: `fd` > `port` (`clientfd` means nothing for TCP).
fn tcp_ctrl_listener(socket: SocketParams<'_>) -> Result<ListenSpec, CliError> {
    if let Some(fd) = non_negative(socket.fd) {
        return Ok(ListenSpec::TcpFd(fd));
    }
    let Some(port) = non_negative(socket.port) else {
        return Err(invalid(
            "Missing port and fd options for TCP control channel",
        ));
    };
    let port =
        u16::try_from(port).map_err(|_| invalid("TCP control channel port outside valid range"))?;
    socket.tcp_spec(port)
}

/// `--server [type=tcp][,port=..[,bindaddr=..[,ifname=..]]][,fd=..][,disconnect]` or
/// `--server type=unixio[,path=..][,fd=..][,mode=..][,uid=..][,gid=..]` (§4.1).
/// `tpm_port_env` is the value of `TPM_PORT`, used when a TCP server has no `port=`.
pub fn parse_server(opts: &str, tpm_port_env: Option<&str>) -> Result<ServerOptions, CliError> {
    let mut socket = SocketParams::default();
    let mut disconnect = None;
    for_each_param("server", opts, |param| {
        match param.key {
            "disconnect" => keep_first(&mut disconnect, parse_bool(param.value)),
            _ => socket.accept(param)?,
        }
        Ok(())
    })?;
    let disconnect = disconnect.unwrap_or(false);
    match socket.kind.unwrap_or("tcp") {
        "tcp" => tcp_server(socket, disconnect, tpm_port_env),
        "unixio" => Ok(ServerOptions::Listen {
            spec: unix_server_listener(socket)?,
            disconnect,
        }),
        other => Err(invalid(format!("Unsupported socket type: {other}"))),
    }
}

/// TCP data channel: `fd` (already connected) > `port` > `TPM_PORT`.
fn tcp_server(
    socket: SocketParams<'_>,
    disconnect: bool,
    tpm_port_env: Option<&str>,
) -> Result<ServerOptions, CliError> {
    if let Some(fd) = non_negative(socket.fd) {
        return Ok(ServerOptions::ConnectedFd(fd));
    }
    // A negative port= counts as missing, so TPM_PORT is consulted.
    let port = match non_negative(socket.port) {
        Some(port) => i64::from(port),
        None => tpm_port_env
            .and_then(port_from_env)
            .ok_or_else(|| invalid("No valid port number provided for TCP socket."))?,
    };
    let port = u16::try_from(port).map_err(|_| invalid("TCP socket port outside valid range"))?;
    Ok(ServerOptions::Listen {
        spec: socket.tcp_spec(port)?,
        disconnect,
    })
}

/// UnixIO data channel: `fd` (listening) > `path`.
fn unix_server_listener(socket: SocketParams<'_>) -> Result<ListenSpec, CliError> {
    if let Some(fd) = non_negative(socket.fd) {
        return Ok(ListenSpec::UnixFd(fd));
    }
    match socket.path {
        Some(path) => Ok(socket.unix_path_spec(path)),
        None => Err(invalid(
            "Missing path and file descriptor option for UnixIO socket",
        )),
    }
}

/// `TPM_PORT` is read like C's `sscanf("%d")`: leading digits count, the rest is ignored.
/// `None` if there are no digits or the number is negative; a number too long for 64 bits
/// is a port all the same, just outside the valid range.
fn port_from_env(value: &str) -> Option<i64> {
    let number = leading_c_number(value);
    match parse_c_integer(number, Radix::Fixed(10)) {
        Ok(port) if port >= 0 => Some(port),
        Err(NumberError::Range) if !number.contains('-') => Some(i64::MAX),
        _ => None,
    }
}

/// The data channel of `-p <port>`: like `--server type=tcp,disconnect` on that port.
pub fn server_for_port(port: u16) -> ServerOptions {
    ServerOptions::Listen {
        spec: ListenSpec::Tcp {
            bindaddr: DEFAULT_BIND_ADDRESS,
            port,
            ifname: None,
        },
        disconnect: true,
    }
}

/// The data channel described by `--server ...` or `-p <port>`, whichever was given last.
pub fn parse_data_arg(
    arg: &DataArg,
    tpm_port_env: Option<&str>,
) -> Result<ServerOptions, CliError> {
    match arg {
        DataArg::Server(opts) => parse_server(opts, tpm_port_env),
        DataArg::Port(port) => Ok(server_for_port(*port)),
    }
}

/// `--pid file=<path>|fd=<fd>` (§3.6): `file` wins over `fd`.
pub fn parse_pid(opts: &str) -> Result<PidOptions, CliError> {
    let mut file = None;
    let mut fd = None;
    for_each_param("pid", opts, |param| {
        match param.key {
            "file" => keep_first(&mut file, param.value),
            "fd" => keep_first(&mut fd, parse_int(param.value)?),
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    })?;
    match (file, non_negative(fd)) {
        (Some(file), _) => Ok(PidOptions::File(PathBuf::from(file))),
        (None, Some(fd)) => Ok(PidOptions::Fd(fd)),
        (None, None) => Err(invalid(
            "The file or fd parameter is required for the pid option.",
        )),
    }
}

/// `--locality [reject-locality-4][,allow-set-locality]` (§3.7).
pub fn parse_locality(opts: &str) -> Result<LocalityOptions, CliError> {
    let mut reject_locality_4 = None;
    let mut allow_set_locality = None;
    for_each_param("locality", opts, |param| {
        match param.key {
            "reject-locality-4" => keep_first(&mut reject_locality_4, parse_bool(param.value)),
            "allow-set-locality" => keep_first(&mut allow_set_locality, parse_bool(param.value)),
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    })?;
    Ok(LocalityOptions {
        reject_locality_4: reject_locality_4.unwrap_or(false),
        allow_set_locality: allow_set_locality.unwrap_or(false),
    })
}

/// `--flags [not-need-init][,startup-clear|startup-state|startup-deactivated|startup-none]
/// [,disable-auto-shutdown]` (§3.8).
pub fn parse_flags(opts: &str) -> Result<FlagOptions, CliError> {
    let mut given = FlagParams::default();
    for_each_param("flags", opts, |param| {
        let slot = match param.key {
            "not-need-init" => &mut given.not_need_init,
            "startup-clear" => &mut given.startup_clear,
            "startup-state" => &mut given.startup_state,
            "startup-deactivated" => &mut given.startup_deactivated,
            "startup-none" => &mut given.startup_none,
            "disable-auto-shutdown" => &mut given.disable_auto_shutdown,
            _ => return Err(unknown_option(param.token)),
        };
        keep_first(slot, parse_bool(param.value));
        Ok(())
    })?;
    let startup = given.startup();
    Ok(FlagOptions {
        // Sending a Startup needs a started TPM.
        not_need_init: is_set(given.not_need_init) || matches!(startup, StartupRequest::Send(_)),
        startup,
        disable_auto_shutdown: is_set(given.disable_auto_shutdown),
    })
}

/// `--migration [incoming][,release-lock-outgoing]` (§3.9).
pub fn parse_migration(opts: &str) -> Result<MigrationOptions, CliError> {
    let mut incoming = None;
    let mut release_lock_outgoing = None;
    for_each_param("migration", opts, |param| {
        match param.key {
            "incoming" => keep_first(&mut incoming, parse_bool(param.value)),
            "release-lock-outgoing" => {
                keep_first(&mut release_lock_outgoing, parse_bool(param.value))
            }
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    })?;
    Ok(MigrationOptions {
        incoming: is_set(incoming),
        release_lock_outgoing: is_set(release_lock_outgoing),
    })
}

/// `--seccomp action=none|kill|log` (§3.10); kill is the default.
pub fn parse_seccomp(opts: &str) -> Result<seccomp::Action, CliError> {
    let mut action = None;
    for_each_param("seccomp", opts, |param| {
        match param.key {
            "action" => keep_first(&mut action, param.value),
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    })?;
    match action.unwrap_or("kill") {
        "kill" => Ok(seccomp::Action::Kill),
        "log" => Ok(seccomp::Action::Log),
        "none" => Ok(seccomp::Action::None),
        other => Err(invalid(format!("Unsupported seccomp log action {other}"))),
    }
}

/// The booleans of `--flags` as given (first occurrence of each).
#[derive(Default)]
struct FlagParams {
    not_need_init: Option<bool>,
    startup_clear: Option<bool>,
    startup_state: Option<bool>,
    startup_deactivated: Option<bool>,
    startup_none: Option<bool>,
    disable_auto_shutdown: Option<bool>,
}

/// A boolean parameter that was left out is false.
fn is_set(flag: Option<bool>) -> bool {
    flag.unwrap_or(false)
}

impl FlagParams {
    /// Precedence when several are given: clear > state > deactivated > none.
    fn startup(&self) -> StartupRequest {
        if is_set(self.startup_clear) {
            StartupRequest::Send(StartupType::Clear)
        } else if is_set(self.startup_state) {
            StartupRequest::Send(StartupType::State)
        } else if is_set(self.startup_deactivated) {
            StartupRequest::Send(StartupType::Deactivated)
        } else if is_set(self.startup_none) {
            StartupRequest::Nothing
        } else {
            StartupRequest::Unspecified
        }
    }
}

/// `--key file=<path>|fd=<fd>[,format=hex|binary][,mode=aes-cbc|aes-128-cbc|aes-256-cbc]
/// [,remove[=bool]]` or `--key pwdfile=<path>|pwdfd=<fd>[,mode=...][,kdf=sha512|pbkdf2]
/// [,remove[=bool]]` (§3.4); `--migration-key` is the same (§3.5). The checks come in
/// swtpm's order: a source, then `format`, `mode`, and `kdf` (for passphrases only).
pub fn parse_key(opts: &str) -> Result<KeyOptions, CliError> {
    let mut given = KeyParams::default();
    for_each_param("key", opts, |param| {
        match param.key {
            "file" => keep_first(&mut given.file, param.value),
            "fd" => keep_first(&mut given.fd, parse_int(param.value)?),
            "pwdfile" => keep_first(&mut given.pwdfile, param.value),
            "pwdfd" => keep_first(&mut given.pwdfd, parse_int(param.value)?),
            "format" => keep_first(&mut given.format, param.value),
            "mode" => keep_first(&mut given.mode, param.value),
            "kdf" => keep_first(&mut given.kdf, param.value),
            "remove" => keep_first(&mut given.remove, parse_bool(param.value)),
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    })?;
    let source = given.source().ok_or_else(|| {
        invalid("Either file=, fd=, pwdfile=, or pwdfd= is required for key option")
    })?;
    let format = match given.format.unwrap_or("hex") {
        "hex" => KeyFormat::Hex,
        "binary" => KeyFormat::Binary,
        other => return Err(invalid(format!("Unknown key format '{other}'."))),
    };
    let size = match given.mode.unwrap_or("aes-128-cbc") {
        "aes-cbc" | "aes-128-cbc" => KeySize::Aes128,
        "aes-256-cbc" => KeySize::Aes256,
        other => return Err(invalid(format!("Unknown encryption mode '{other}'."))),
    };
    let passphrase = matches!(
        source,
        KeySource::PassphraseFile(_) | KeySource::PassphraseFd(_)
    );
    let kdf = match given.kdf.filter(|_| passphrase).unwrap_or("pbkdf2") {
        "pbkdf2" => Kdf::Pbkdf2,
        "sha512" => Kdf::Sha512,
        other => return Err(invalid(format!("Unknown kdf '{other}'."))),
    };
    Ok(KeyOptions {
        source,
        format,
        size,
        kdf,
        remove: is_set(given.remove),
    })
}

/// The parameters of `--key` as given (first occurrence of each).
#[derive(Default)]
struct KeyParams<'a> {
    file: Option<&'a str>,
    fd: Option<i32>,
    pwdfile: Option<&'a str>,
    pwdfd: Option<i32>,
    format: Option<&'a str>,
    mode: Option<&'a str>,
    kdf: Option<&'a str>,
    remove: Option<bool>,
}

impl KeyParams<'_> {
    /// file > fd > pwdfile > pwdfd; a negative fd counts as not given.
    fn source(&self) -> Option<KeySource> {
        if let Some(file) = self.file {
            Some(KeySource::File(PathBuf::from(file)))
        } else if let Some(fd) = non_negative(self.fd) {
            Some(KeySource::Fd(fd))
        } else if let Some(file) = self.pwdfile {
            Some(KeySource::PassphraseFile(PathBuf::from(file)))
        } else {
            non_negative(self.pwdfd).map(KeySource::PassphraseFd)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sockets: the parameters --ctrl and --server share
// ---------------------------------------------------------------------------------------

/// The socket parameters common to `--ctrl` and `--server`, first occurrence of each.
#[derive(Default)]
struct SocketParams<'a> {
    kind: Option<&'a str>,
    path: Option<&'a str>,
    port: Option<i32>,
    bindaddr: Option<&'a str>,
    ifname: Option<&'a str>,
    fd: Option<i32>,
    mode: Option<u32>,
    uid: Option<Owner>,
    gid: Option<Owner>,
}

impl<'a> SocketParams<'a> {
    /// Takes one of the common parameters; any other key is an unknown option.
    fn accept(&mut self, param: Param<'a>) -> Result<(), String> {
        match param.key {
            "type" => keep_first(&mut self.kind, param.value),
            "path" => keep_first(&mut self.path, param.value),
            "port" => keep_first(&mut self.port, parse_int(param.value)?),
            "bindaddr" => keep_first(&mut self.bindaddr, param.value),
            "ifname" => keep_first(&mut self.ifname, param.value),
            "fd" => keep_first(&mut self.fd, parse_int(param.value)?),
            "mode" => keep_first(&mut self.mode, parse_mode(param.value)?),
            "uid" => keep_first(&mut self.uid, parse_owner("uid", param.value)?),
            "gid" => keep_first(&mut self.gid, parse_owner("gid", param.value)?),
            _ => return Err(unknown_option(param.token)),
        }
        Ok(())
    }

    fn unix_path_spec(self, path: &str) -> ListenSpec {
        ListenSpec::UnixPath {
            path: PathBuf::from(path),
            mode: self.mode.unwrap_or(DEFAULT_SOCKET_MODE),
            uid: self.uid,
            gid: self.gid,
        }
    }

    fn tcp_spec(&self, port: u16) -> Result<ListenSpec, CliError> {
        Ok(ListenSpec::Tcp {
            bindaddr: parse_bind_address(self.bindaddr, self.ifname)?,
            port,
            ifname: self.ifname.map(str::to_owned),
        })
    }
}

/// `bindaddr=`: IPv6 if it contains a `:`, else dotted-quad IPv4 (as inet_pton reads
/// them). A link-local IPv6 address needs `ifname=` to say which link.
fn parse_bind_address(addr: Option<&str>, ifname: Option<&str>) -> Result<IpAddr, CliError> {
    let Some(text) = addr else {
        return Ok(DEFAULT_BIND_ADDRESS);
    };
    let parsed = if text.contains(':') {
        text.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
    };
    let address =
        parsed.ok_or_else(|| invalid(format!("Could not parse the bind address '{text}'")))?;
    let link_local = matches!(address, IpAddr::V6(v6) if v6.is_unicast_link_local());
    if link_local && ifname.is_none() {
        return Err(invalid("Missing interface name for link local address"));
    }
    Ok(address)
}

// ---------------------------------------------------------------------------------------
// Tokenizing (§2)
// ---------------------------------------------------------------------------------------

/// One parameter of an option string: `key=value`, or a bare `key` meaning `key=true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Param<'a> {
    /// The whole `key=value` text, for error messages.
    token: &'a str,
    key: &'a str,
    value: &'a str,
}

/// Feeds the parameters of `opts` to `take`, in order, stopping at the first error.
/// `what` names the option in error messages (`Error parsing <what> options: ...`).
/// Empty tokens and empty values are unknown options, whatever `take` knows.
fn for_each_param<'a>(
    what: &'static str,
    opts: &'a str,
    mut take: impl FnMut(Param<'a>) -> Result<(), String>,
) -> Result<(), CliError> {
    let option_error = |message| CliError::Option { what, message };
    let mut rest = Some(opts);
    while let Some(text) = rest {
        let (token, remainder) = split_token(text).map_err(option_error)?;
        rest = remainder;
        let param = param_of(token);
        if param.key.is_empty() || param.value.is_empty() {
            return Err(option_error(unknown_option(token)));
        }
        take(param).map_err(option_error)?;
    }
    Ok(())
}

/// Splits the first token off `text`: up to the first comma, except that a value
/// starting with `{` runs to its matching `}` (JSON maps may contain commas).
/// Returns the token and what follows the separating comma (`None` at the end).
fn split_token(text: &str) -> Result<(&str, Option<&str>), String> {
    let comma = text.find(',');
    let json_start = match text.find('=') {
        Some(eq) if comma.is_none_or(|comma| eq < comma) && text[eq + 1..].starts_with('{') => {
            Some(eq + 1)
        }
        _ => None,
    };
    let token_end = match json_start {
        Some(start) => start + json_map_len(&text[start..])?,
        None => comma.unwrap_or(text.len()),
    };
    let (token, after) = text.split_at(token_end);
    match after.strip_prefix(',') {
        Some(rest) => Ok((token, Some(rest))),
        None if after.is_empty() => Ok((token, None)),
        None => Err("Unexpected character following JSON map.".into()),
    }
}

/// Length of the brace-balanced JSON map at the start of `text` (which starts with `{`).
fn json_map_len(text: &str) -> Result<usize, String> {
    let mut depth = 0usize;
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(at + 1);
                }
            }
            _ => {}
        }
    }
    Err("Unterminated JSON map.".into())
}

fn param_of(token: &str) -> Param<'_> {
    match token.split_once('=') {
        Some((key, value)) => Param { token, key, value },
        None => Param {
            token,
            key: token,
            value: "true",
        },
    }
}

/// The first occurrence of a key wins; later ones are still checked for errors.
fn keep_first<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

fn unknown_option(token: &str) -> String {
    format!("Unknown option '{token}'")
}

fn invalid(message: impl Into<String>) -> CliError {
    CliError::Invalid(message.into())
}

/// fds and ports are `-1` in swtpm when not given, so any negative value counts as absent.
fn non_negative(value: Option<i32>) -> Option<i32> {
    value.filter(|value| *value >= 0)
}

// ---------------------------------------------------------------------------------------
// Value types (§2)
// ---------------------------------------------------------------------------------------

/// `true` or `1` in any case is true; anything else is false.
fn parse_bool(value: &str) -> bool {
    value == "1" || value.eq_ignore_ascii_case("true")
}

/// A signed decimal that fits a C `int` (`fd`, `port`, `clientfd`). swtpm truncates
/// larger values silently; they are refused here.
fn parse_int(value: &str) -> Result<i32, String> {
    parse_c_integer(value, Radix::Fixed(10))
        .ok()
        .and_then(|number| i32::try_from(number).ok())
        .ok_or_else(|| format!("invalid number '{value}'"))
}

/// `level=`: read as a signed decimal and stored unsigned, so `-1` is the highest level.
fn parse_level(value: &str) -> Result<u32, String> {
    match parse_c_integer(value, Radix::Fixed(10)) {
        Ok(number) if (i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(&number) => {
            // Two's complement, as C's conversion of a negative int to unsigned.
            Ok(number as u32)
        }
        _ => Err(format!("invalid number '{value}'")),
    }
}

/// `mode=`: octal permission bits, at most 0777.
fn parse_mode(value: &str) -> Result<u32, String> {
    match parse_c_integer(value, Radix::Fixed(8)) {
        Ok(mode) if (0..=MAX_MODE).contains(&mode) => Ok(mode as u32),
        Ok(_) => Err(format!("mode {value} is invalid")),
        Err(_) => Err(format!("invalid mode type '{value}'")),
    }
}

/// `uid=`/`gid=`: a number if the whole value reads as one, else a name.
fn parse_owner(what: &str, value: &str) -> Result<Owner, String> {
    let out_of_range = || format!("{what} {value} outside valid range");
    match parse_c_integer(value, Radix::Fixed(10)) {
        Ok(id) => u32::try_from(id).map(Owner::Id).map_err(|_| out_of_range()),
        Err(NumberError::Range) => Err(out_of_range()),
        Err(NumberError::Syntax) => Ok(Owner::Name(value.to_owned())),
    }
}

// ---------------------------------------------------------------------------------------
// C-style number conversion
// ---------------------------------------------------------------------------------------

/// The base of a number, as the `base` argument of C's `strtol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Radix {
    /// `0x`/`0X` prefix → hexadecimal, leading `0` → octal, else decimal (strtol base 0).
    Auto,
    Fixed(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NumberError {
    /// No digits, or something after them.
    Syntax,
    /// Does not fit 64 bits (strtol's `ERANGE`).
    Range,
}

/// Reads a whole string as C's `strtol` would and insists that nothing follows the digits:
/// optional leading white space, an optional sign, then at least one digit.
pub(super) fn parse_c_integer(text: &str, radix: Radix) -> Result<i64, NumberError> {
    let unsigned = text.trim_start_matches(is_c_space);
    let (negative, unsigned) = match unsigned.as_bytes().first() {
        Some(b'-') => (true, &unsigned[1..]),
        Some(b'+') => (false, &unsigned[1..]),
        _ => (false, unsigned),
    };
    let (radix, digits) = match radix {
        Radix::Auto => detect_radix(unsigned),
        Radix::Fixed(radix) => (radix, unsigned),
    };
    if digits.is_empty() {
        return Err(NumberError::Syntax);
    }
    let mut magnitude: i128 = 0;
    for digit in digits.chars() {
        let digit = digit.to_digit(radix).ok_or(NumberError::Syntax)?;
        magnitude = magnitude * i128::from(radix) + i128::from(digit);
        // Keep going to report junk after the digits as a syntax error, as strtol users do,
        // but never let the accumulator grow without bound.
        magnitude = magnitude.min(i128::from(u64::MAX) + 1);
    }
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| NumberError::Range)
}

/// strtol base 0: `0x` followed by a hex digit is hexadecimal, a leading `0` octal.
fn detect_radix(text: &str) -> (u32, &str) {
    let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
    match hex {
        Some(digits) if digits.starts_with(|c: char| c.is_ascii_hexdigit()) => (16, digits),
        _ if text.starts_with('0') => (8, text),
        _ => (10, text),
    }
}

/// The prefix of `text` that C's `sscanf("%d")` would read: white space, a sign, digits.
fn leading_c_number(text: &str) -> &str {
    let unsigned = text.trim_start_matches(is_c_space);
    let sign_len = usize::from(unsigned.starts_with(['+', '-']));
    let digits_len = unsigned[sign_len..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    &text[..text.len() - unsigned.len() + sign_len + digits_len]
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_error(what: &'static str, message: &str) -> CliError {
        CliError::Option {
            what,
            message: message.to_owned(),
        }
    }

    fn invalid_error(message: &str) -> CliError {
        CliError::Invalid(message.to_owned())
    }

    // ---- tokenizer ----

    fn tokens(opts: &str) -> Result<Vec<Param<'_>>, CliError> {
        let mut out = Vec::new();
        for_each_param("test", opts, |param| {
            out.push(param);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn splits_on_commas_and_keeps_further_equals_in_the_value() {
        let params = tokens("a=1,b,c=x=y").unwrap();
        assert_eq!(
            params,
            vec![
                Param {
                    token: "a=1",
                    key: "a",
                    value: "1"
                },
                Param {
                    token: "b",
                    key: "b",
                    value: "true"
                },
                Param {
                    token: "c=x=y",
                    key: "c",
                    value: "x=y"
                },
            ]
        );
    }

    #[test]
    fn empty_tokens_are_unknown_options() {
        for opts in ["", ",", "a=1,", ",a=1", "a=1,,b=2"] {
            assert_eq!(
                tokens(opts),
                Err(option_error("test", "Unknown option ''")),
                "{opts:?}"
            );
        }
    }

    #[test]
    fn empty_keys_and_values_are_unknown_options() {
        assert_eq!(
            tokens("dir="),
            Err(option_error("test", "Unknown option 'dir='"))
        );
        assert_eq!(
            tokens("=x"),
            Err(option_error("test", "Unknown option '=x'"))
        );
        assert_eq!(tokens("="), Err(option_error("test", "Unknown option '='")));
    }

    #[test]
    fn json_maps_may_contain_commas_and_nested_braces() {
        let params = tokens(r#"profile={"a":"x,y","b":{"c":1}},n=2"#).unwrap();
        assert_eq!(params.len(), 2);
        assert_eq!(params[0].key, "profile");
        assert_eq!(params[0].value, r#"{"a":"x,y","b":{"c":1}}"#);
        assert_eq!(
            params[1],
            Param {
                token: "n=2",
                key: "n",
                value: "2"
            }
        );
        assert_eq!(tokens("p={}").unwrap()[0].value, "{}");
    }

    #[test]
    fn json_map_errors() {
        assert_eq!(
            tokens("p={a,b"),
            Err(option_error("test", "Unterminated JSON map."))
        );
        assert_eq!(
            tokens("p={{a}"),
            Err(option_error("test", "Unterminated JSON map."))
        );
        assert_eq!(
            tokens("p={a}x,b"),
            Err(option_error(
                "test",
                "Unexpected character following JSON map."
            ))
        );
        assert_eq!(
            tokens("p={a},"),
            Err(option_error("test", "Unknown option ''"))
        );
    }

    #[test]
    fn braces_not_right_after_the_equals_sign_are_plain_text() {
        let params = tokens("a=x{b,c}").unwrap();
        assert_eq!(params[0].value, "x{b");
        assert_eq!(params[1].token, "c}");
        // A brace after a comma that precedes the first `=` is not a value either.
        let params = tokens("a,b={c,d}").unwrap();
        assert_eq!(params[1].value, "{c,d}");
    }

    // ---- value types ----

    #[test]
    fn booleans() {
        for yes in ["true", "TRUE", "True", "1"] {
            assert!(parse_bool(yes), "{yes}");
        }
        for no in ["yes", "on", "false", "0", "11", " true", "truee"] {
            assert!(!parse_bool(no), "{no}");
        }
    }

    #[test]
    fn ints_follow_strtol_base_10() {
        assert_eq!(parse_int("42"), Ok(42));
        assert_eq!(parse_int("  42"), Ok(42));
        assert_eq!(parse_int("+42"), Ok(42));
        assert_eq!(parse_int("-1"), Ok(-1));
        assert_eq!(parse_int("0x10"), Err("invalid number '0x10'".into()));
        assert_eq!(parse_int("42 "), Err("invalid number '42 '".into()));
        assert_eq!(parse_int("true"), Err("invalid number 'true'".into()));
        assert_eq!(parse_int("-"), Err("invalid number '-'".into()));
        assert_eq!(parse_int(" "), Err("invalid number ' '".into()));
        assert_eq!(parse_int("٣"), Err("invalid number '٣'".into()));
    }

    #[test]
    fn ints_outside_the_c_int_range_are_refused() {
        assert_eq!(parse_int("2147483647"), Ok(i32::MAX));
        assert_eq!(parse_int("-2147483648"), Ok(i32::MIN));
        for big in [
            "2147483648",
            "4294967299",
            "99999999999999999999",
            "-99999999999999999999",
        ] {
            assert_eq!(parse_int(big), Err(format!("invalid number '{big}'")));
        }
    }

    #[test]
    fn levels_wrap_negative_values_like_c() {
        assert_eq!(parse_level("20"), Ok(20));
        assert_eq!(parse_level("-1"), Ok(u32::MAX));
        assert_eq!(parse_level("4294967295"), Ok(u32::MAX));
        assert_eq!(
            parse_level("4294967296"),
            Err("invalid number '4294967296'".into())
        );
        assert_eq!(parse_level("x"), Err("invalid number 'x'".into()));
    }

    #[test]
    fn modes_are_octal_up_to_0777() {
        for (text, mode) in [
            ("600", 0o600),
            ("0600", 0o600),
            ("+600", 0o600),
            (" 600", 0o600),
        ] {
            assert_eq!(parse_mode(text), Ok(mode), "{text}");
        }
        assert_eq!(parse_mode("0"), Ok(0));
        assert_eq!(parse_mode("777"), Ok(0o777));
        for bad_type in [
            "0x600",
            "888",
            "9",
            "true",
            "600 ",
            "",
            "-",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_mode(bad_type),
                Err(format!("invalid mode type '{bad_type}'"))
            );
        }
        for too_big in ["1777", "01000", "-1", "+01000"] {
            assert_eq!(
                parse_mode(too_big),
                Err(format!("mode {too_big} is invalid"))
            );
        }
    }

    #[test]
    fn owners_are_numbers_or_names() {
        assert_eq!(parse_owner("uid", "0"), Ok(Owner::Id(0)));
        assert_eq!(parse_owner("uid", "+0"), Ok(Owner::Id(0)));
        assert_eq!(parse_owner("uid", " 12"), Ok(Owner::Id(12)));
        assert_eq!(parse_owner("gid", "4294967295"), Ok(Owner::Id(u32::MAX)));
        assert_eq!(parse_owner("uid", "tss"), Ok(Owner::Name("tss".into())));
        assert_eq!(parse_owner("uid", "0x0"), Ok(Owner::Name("0x0".into())));
        assert_eq!(parse_owner("uid", "ü"), Ok(Owner::Name("ü".into())));
        for big in ["4294967296", "-1", "99999999999999999999"] {
            assert_eq!(
                parse_owner("uid", big),
                Err(format!("uid {big} outside valid range"))
            );
            assert_eq!(
                parse_owner("gid", big),
                Err(format!("gid {big} outside valid range"))
            );
        }
    }

    #[test]
    fn c_integers_with_automatic_base() {
        assert_eq!(parse_c_integer("0x1000", Radix::Auto), Ok(0x1000));
        assert_eq!(parse_c_integer("0X1f", Radix::Auto), Ok(0x1f));
        assert_eq!(parse_c_integer("010", Radix::Auto), Ok(8));
        assert_eq!(parse_c_integer("0", Radix::Auto), Ok(0));
        assert_eq!(parse_c_integer(" +12", Radix::Auto), Ok(12));
        assert_eq!(parse_c_integer("-12", Radix::Auto), Ok(-12));
        for bad in ["", "0x", "0xg", "08", "12 ", "1_000", "--1", "+-1", "x"] {
            assert_eq!(
                parse_c_integer(bad, Radix::Auto),
                Err(NumberError::Syntax),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_c_integer("0xffffffffffffffffff", Radix::Auto),
            Err(NumberError::Range)
        );
        assert_eq!(
            parse_c_integer(&"9".repeat(5000), Radix::Auto),
            Err(NumberError::Range)
        );
        assert_eq!(
            parse_c_integer("-9223372036854775808", Radix::Auto),
            Ok(i64::MIN)
        );
        assert_eq!(
            parse_c_integer(&format!("{}x", "9".repeat(50)), Radix::Auto),
            Err(NumberError::Syntax)
        );
    }

    #[test]
    fn leading_numbers_as_sscanf_reads_them() {
        assert_eq!(leading_c_number("2321abc"), "2321");
        assert_eq!(leading_c_number(" -5x"), " -5");
        assert_eq!(leading_c_number("abc"), "");
        assert_eq!(leading_c_number("ü1"), "");
    }

    // ---- --tpmstate ----

    fn dir_state(path: &str) -> TpmStateOptions {
        TpmStateOptions {
            backend: StateBackendSpec::Dir(PathBuf::from(path)),
            mode: None,
            lock: None,
        }
    }

    #[test]
    fn tpmstate_dir() {
        assert_eq!(
            parse_tpmstate("dir=/var/lib/tpm"),
            Ok(dir_state("/var/lib/tpm"))
        );
        // A bare name is `name=true`, also for strings.
        assert_eq!(parse_tpmstate("dir"), Ok(dir_state("true")));
    }

    #[test]
    fn tpmstate_backend_uris() {
        assert_eq!(parse_tpmstate("backend-uri=dir:///x"), Ok(dir_state("/x")));
        assert_eq!(
            parse_tpmstate("backend-uri=dir://rel"),
            Ok(dir_state("rel"))
        );
        assert_eq!(
            parse_tpmstate("backend-uri=file:///dev/sdb")
                .unwrap()
                .backend,
            StateBackendSpec::File(PathBuf::from("/dev/sdb"))
        );
        for other in ["nvram:///x", "/just/a/path", "DIR:///x"] {
            assert_eq!(
                parse_tpmstate(&format!("backend-uri={other}"))
                    .unwrap()
                    .backend,
                StateBackendSpec::Unsupported(other.into())
            );
        }
    }

    #[test]
    fn tpmstate_dir_wins_and_first_occurrence_wins() {
        assert_eq!(
            parse_tpmstate("backend-uri=file:///f,dir=/d"),
            Ok(dir_state("/d"))
        );
        assert_eq!(
            parse_tpmstate("dir=/first,dir=/second"),
            Ok(dir_state("/first"))
        );
    }

    #[test]
    fn tpmstate_mode_and_lock() {
        let state = parse_tpmstate("dir=/d,mode=0600,lock").unwrap();
        assert_eq!((state.mode, state.lock), (Some(0o600), Some(true)));
        let state = parse_tpmstate("dir=/d,lock=false,lock=true").unwrap();
        assert_eq!(state.lock, Some(false));
        assert_eq!(parse_tpmstate("dir=/d,lock=yes").unwrap().lock, Some(false));
        // Later duplicates are still checked.
        assert_eq!(
            parse_tpmstate("dir=/d,mode=600,mode=999"),
            Err(option_error("tpmstate", "invalid mode type '999'"))
        );
        assert_eq!(
            parse_tpmstate("dir=/d,mode"),
            Err(option_error("tpmstate", "invalid mode type 'true'"))
        );
    }

    #[test]
    fn tpmstate_errors() {
        let required = "The dir or backend-uri parameters is required for the tpmstate option.";
        assert_eq!(parse_tpmstate("mode=600"), Err(invalid_error(required)));
        assert_eq!(parse_tpmstate("lock"), Err(invalid_error(required)));
        assert_eq!(
            parse_tpmstate(""),
            Err(option_error("tpmstate", "Unknown option ''"))
        );
        assert_eq!(
            parse_tpmstate("dir="),
            Err(option_error("tpmstate", "Unknown option 'dir='"))
        );
        assert_eq!(
            parse_tpmstate("DIR=/x"),
            Err(option_error("tpmstate", "Unknown option 'DIR=/x'"))
        );
        assert_eq!(
            parse_tpmstate("dir =/x"),
            Err(option_error("tpmstate", "Unknown option 'dir =/x'"))
        );
        assert_eq!(
            parse_tpmstate("dir=/x,backup"),
            Err(option_error("tpmstate", "Unknown option 'backup'"))
        );
        assert_eq!(
            parse_tpmstate("dir=/x,x=é"),
            Err(option_error("tpmstate", "Unknown option 'x=é'"))
        );
        assert_eq!(
            parse_tpmstate("dir=/x,").unwrap_err().to_string(),
            "Error parsing tpmstate options: Unknown option ''"
        );
    }

    #[test]
    fn tpmstate_values_may_hold_json_like_text() {
        assert_eq!(parse_tpmstate("dir={a,b}"), Ok(dir_state("{a,b}")));
    }

    #[test]
    fn tpm_path_environment() {
        assert_eq!(
            tpmstate_from_env(Some("/var/tpm")),
            Some(dir_state("/var/tpm"))
        );
        assert_eq!(tpmstate_from_env(Some("")), None);
        assert_eq!(tpmstate_from_env(None), None);
    }

    // ---- --log ----

    fn log(target: LogTarget, level: u32, prefix: Option<&str>, truncate: bool) -> LogOptions {
        LogOptions {
            target,
            level,
            prefix: prefix.map(str::to_owned),
            truncate,
        }
    }

    #[test]
    fn log_targets() {
        assert_eq!(
            parse_log("file=/var/log/tpm.log"),
            Ok(log(
                LogTarget::File("/var/log/tpm.log".into()),
                1,
                None,
                false
            ))
        );
        assert_eq!(parse_log("fd=1"), Ok(log(LogTarget::Fd(1), 1, None, false)));
        assert_eq!(
            parse_log("file=-"),
            Ok(log(LogTarget::Disabled, 1, None, false))
        );
        assert_eq!(
            parse_log("level=3"),
            Ok(log(LogTarget::Stderr, 3, None, false))
        );
        // fd wins over file, a negative fd is ignored.
        assert_eq!(parse_log("file=/f,fd=7").unwrap().target, LogTarget::Fd(7));
        assert_eq!(parse_log("file=-,fd=7").unwrap().target, LogTarget::Fd(7));
        assert_eq!(
            parse_log("fd=-1,file=/f").unwrap().target,
            LogTarget::File("/f".into())
        );
        assert_eq!(parse_log("fd=-1").unwrap().target, LogTarget::Stderr);
    }

    #[test]
    fn log_level_prefix_truncate() {
        assert_eq!(parse_log("level=0").unwrap().level, 1);
        assert_eq!(parse_log("level=20").unwrap().level, 20);
        assert_eq!(parse_log("level=-1").unwrap().level, u32::MAX);
        assert_eq!(
            parse_log("level=5,level=x"),
            Err(option_error("logging", "invalid number 'x'"))
        );
        assert_eq!(
            parse_log("prefix=XX:").unwrap().prefix.as_deref(),
            Some("XX:")
        );
        assert_eq!(
            parse_log("prefix=a=b").unwrap().prefix.as_deref(),
            Some("a=b")
        );
        assert!(parse_log("file=/f,truncate").unwrap().truncate);
        assert!(!parse_log("file=/f,truncate=0").unwrap().truncate);
    }

    #[test]
    fn log_errors() {
        assert_eq!(
            parse_log("fd=x"),
            Err(option_error("logging", "invalid number 'x'"))
        );
        assert_eq!(
            parse_log("level"),
            Err(option_error("logging", "invalid number 'true'"))
        );
        assert_eq!(
            parse_log(""),
            Err(option_error("logging", "Unknown option ''"))
        );
        assert_eq!(
            parse_log("prefix="),
            Err(option_error("logging", "Unknown option 'prefix='"))
        );
        assert_eq!(
            parse_log("color"),
            Err(option_error("logging", "Unknown option 'color'"))
        );
        assert_eq!(
            parse_log("bogus").unwrap_err().to_string(),
            "Error parsing logging options: Unknown option 'bogus'"
        );
    }

    // ---- --ctrl ----

    fn unix_path(path: &str, mode: u32, uid: Option<Owner>, gid: Option<Owner>) -> ListenSpec {
        ListenSpec::UnixPath {
            path: PathBuf::from(path),
            mode,
            uid,
            gid,
        }
    }

    fn tcp(bindaddr: &str, port: u16, ifname: Option<&str>) -> ListenSpec {
        ListenSpec::Tcp {
            bindaddr: bindaddr.parse().unwrap(),
            port,
            ifname: ifname.map(str::to_owned),
        }
    }

    fn ctrl_listen(spec: ListenSpec) -> CtrlOptions {
        CtrlOptions {
            channel: CtrlChannel::Listen(spec),
            terminate: false,
        }
    }

    #[test]
    fn ctrl_unixio() {
        assert_eq!(
            parse_ctrl("type=unixio,path=/run/ctrl.sock"),
            Ok(ctrl_listen(unix_path("/run/ctrl.sock", 0o770, None, None)))
        );
        assert_eq!(
            parse_ctrl("type=unixio,path=/s,mode=0600,uid=tss,gid=0"),
            Ok(ctrl_listen(unix_path(
                "/s",
                0o600,
                Some(Owner::Name("tss".into())),
                Some(Owner::Id(0))
            )))
        );
        let with_terminate = parse_ctrl("type=unixio,path=/s,terminate").unwrap();
        assert!(with_terminate.terminate);
    }

    #[test]
    fn ctrl_unixio_precedence_fd_clientfd_path() {
        assert_eq!(
            parse_ctrl("type=unixio,path=/s,clientfd=4,fd=3")
                .unwrap()
                .channel,
            CtrlChannel::Listen(ListenSpec::UnixFd(3))
        );
        assert_eq!(
            parse_ctrl("type=unixio,path=/s,clientfd=4")
                .unwrap()
                .channel,
            CtrlChannel::UnixClientFd(4)
        );
        assert_eq!(
            parse_ctrl("type=unixio,path=/s,clientfd=-1,fd=-1")
                .unwrap()
                .channel,
            CtrlChannel::Listen(unix_path("/s", 0o770, None, None))
        );
        assert_eq!(
            parse_ctrl("type=unixio,clientfd=-1"),
            Err(invalid_error(
                "Missing path and fd options for UnixIO control channel"
            ))
        );
        assert_eq!(
            parse_ctrl("type=unixio,port=1"),
            Err(invalid_error(
                "Missing path and fd options for UnixIO control channel"
            ))
        );
    }

    #[test]
    fn ctrl_tcp() {
        assert_eq!(
            parse_ctrl("type=tcp,port=2322"),
            Ok(ctrl_listen(tcp("127.0.0.1", 2322, None)))
        );
        assert_eq!(
            parse_ctrl("type=tcp,port=2322,fd=5").unwrap().channel,
            CtrlChannel::Listen(ListenSpec::TcpFd(5))
        );
        assert_eq!(
            parse_ctrl("type=tcp,port=0,bindaddr=::1"),
            Ok(ctrl_listen(tcp("::1", 0, None)))
        );
        assert_eq!(
            parse_ctrl("type=tcp,port=1,bindaddr=fe80::1,ifname=eth0"),
            Ok(ctrl_listen(tcp("fe80::1", 1, Some("eth0"))))
        );
        for missing in [
            "type=tcp",
            "type=tcp,port=-1",
            "type=tcp,port=-1,fd=-1",
            "type=tcp,clientfd=3",
        ] {
            assert_eq!(
                parse_ctrl(missing),
                Err(invalid_error(
                    "Missing port and fd options for TCP control channel"
                )),
                "{missing}"
            );
        }
        assert_eq!(
            parse_ctrl("type=tcp,port=65536"),
            Err(invalid_error(
                "TCP control channel port outside valid range"
            ))
        );
        assert_eq!(
            parse_ctrl("type=tcp,port=99999999999"),
            Err(option_error("ctrl", "invalid number '99999999999'"))
        );
    }

    #[test]
    fn ctrl_type_errors() {
        assert_eq!(
            parse_ctrl("path=/s"),
            Err(invalid_error("Missing type parameter for control channel"))
        );
        assert_eq!(
            parse_ctrl("type=TCP,port=1"),
            Err(invalid_error("Unsupported control channel type: TCP"))
        );
        assert_eq!(
            parse_ctrl("type"),
            Err(invalid_error("Unsupported control channel type: true"))
        );
        assert_eq!(
            parse_ctrl("type="),
            Err(option_error("ctrl", "Unknown option 'type='"))
        );
        assert_eq!(
            parse_ctrl("type=unixio,path=/s,disconnect"),
            Err(option_error("ctrl", "Unknown option 'disconnect'"))
        );
        assert_eq!(
            parse_ctrl("type=unixio,path=/s,uid=-1"),
            Err(option_error("ctrl", "uid -1 outside valid range"))
        );
        assert_eq!(
            parse_ctrl("type=unixio,path=/s,fd=abc,fd=1x"),
            Err(option_error("ctrl", "invalid number 'abc'"))
        );
    }

    #[test]
    fn bind_addresses() {
        for bad in [
            "foo",
            "1.2.3",
            "127.000.0.1",
            "::1%lo",
            "::g",
            "256.0.0.1",
            "١.١.١.١",
        ] {
            let text = format!("type=tcp,port=1,bindaddr={bad}");
            assert_eq!(
                parse_ctrl(&text),
                Err(invalid_error(&format!(
                    "Could not parse the bind address '{bad}'"
                ))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_ctrl("type=tcp,port=1,bindaddr=fe80::1"),
            Err(invalid_error(
                "Missing interface name for link local address"
            ))
        );
        assert_eq!(
            parse_ctrl("type=tcp,port=1,bindaddr=0.0.0.0").unwrap(),
            ctrl_listen(tcp("0.0.0.0", 1, None))
        );
        assert_eq!(
            parse_ctrl("type=tcp,port=1,bindaddr=::ffff:127.0.0.1").unwrap(),
            ctrl_listen(tcp("::ffff:127.0.0.1", 1, None))
        );
    }

    // ---- --server and -p ----

    #[test]
    fn server_tcp() {
        assert_eq!(
            parse_server("type=tcp,port=2321", None),
            Ok(ServerOptions::Listen {
                spec: tcp("127.0.0.1", 2321, None),
                disconnect: false
            })
        );
        // type defaults to tcp.
        assert_eq!(
            parse_server("port=2321,disconnect", None),
            Ok(ServerOptions::Listen {
                spec: tcp("127.0.0.1", 2321, None),
                disconnect: true
            })
        );
        assert_eq!(
            parse_server("type=tcp,fd=4,port=1", None),
            Ok(ServerOptions::ConnectedFd(4))
        );
        assert_eq!(
            parse_server("bindaddr=::,port=1", None),
            Ok(ServerOptions::Listen {
                spec: tcp("::", 1, None),
                disconnect: false
            })
        );
    }

    #[test]
    fn server_tcp_port_from_environment() {
        let listen = |port| ServerOptions::Listen {
            spec: tcp("127.0.0.1", port, None),
            disconnect: false,
        };
        assert_eq!(parse_server("type=tcp", Some("2321")), Ok(listen(2321)));
        assert_eq!(
            parse_server("disconnect=0", Some("2400x")),
            Ok(listen(2400))
        );
        assert_eq!(parse_server("port=-1", Some(" 12")), Ok(listen(12)));
        // An explicit port wins over TPM_PORT.
        assert_eq!(parse_server("port=5", Some("6")), Ok(listen(5)));
        let no_port = Err(invalid_error(
            "No valid port number provided for TCP socket.",
        ));
        for env in [
            None,
            Some("abc"),
            Some("-5"),
            Some(""),
            Some("-99999999999999999999"),
        ] {
            assert_eq!(parse_server("type=tcp", env), no_port, "{env:?}");
        }
        let out_of_range = Err(invalid_error("TCP socket port outside valid range"));
        assert_eq!(parse_server("type=tcp", Some("70000x")), out_of_range);
        assert_eq!(
            parse_server("type=tcp", Some("99999999999999999999")),
            out_of_range
        );
        assert_eq!(parse_server("port=65536", Some("1")), out_of_range);
    }

    #[test]
    fn server_unixio() {
        assert_eq!(
            parse_server("type=unixio,path=/s", None),
            Ok(ServerOptions::Listen {
                spec: unix_path("/s", 0o770, None, None),
                disconnect: false
            })
        );
        assert_eq!(
            parse_server("type=unixio,path=/s,fd=3,disconnect", None),
            Ok(ServerOptions::Listen {
                spec: ListenSpec::UnixFd(3),
                disconnect: true
            })
        );
        assert_eq!(
            parse_server("type=unixio", Some("2321")),
            Err(invalid_error(
                "Missing path and file descriptor option for UnixIO socket"
            ))
        );
    }

    #[test]
    fn server_errors() {
        assert_eq!(
            parse_server("type=foo", None),
            Err(invalid_error("Unsupported socket type: foo"))
        );
        assert_eq!(
            parse_server("type=tcp,terminate", None),
            Err(option_error("server", "Unknown option 'terminate'"))
        );
        assert_eq!(
            parse_server("type=tcp,clientfd=3", None),
            Err(option_error("server", "Unknown option 'clientfd=3'"))
        );
        assert_eq!(
            parse_server("", Some("1")),
            Err(option_error("server", "Unknown option ''"))
        );
        assert_eq!(
            parse_server("port=1,bindaddr=nowhere", None),
            Err(invalid_error("Could not parse the bind address 'nowhere'"))
        );
    }

    #[test]
    fn data_args() {
        assert_eq!(
            parse_data_arg(&DataArg::Port(2321), None),
            Ok(ServerOptions::Listen {
                spec: tcp("127.0.0.1", 2321, None),
                disconnect: true
            })
        );
        assert_eq!(
            parse_data_arg(&DataArg::Server("type=tcp,fd=9".into()), None),
            Ok(ServerOptions::ConnectedFd(9))
        );
    }

    // ---- --pid, --locality, --flags ----

    #[test]
    fn pid() {
        assert_eq!(
            parse_pid("file=/run/swtpm.pid"),
            Ok(PidOptions::File("/run/swtpm.pid".into()))
        );
        assert_eq!(parse_pid("fd=5"), Ok(PidOptions::Fd(5)));
        assert_eq!(parse_pid("fd=5,file=/p"), Ok(PidOptions::File("/p".into())));
        let required = Err(invalid_error(
            "The file or fd parameter is required for the pid option.",
        ));
        assert_eq!(parse_pid("fd=-1"), required);
        assert_eq!(
            parse_pid("bogus=1"),
            Err(option_error("pid", "Unknown option 'bogus=1'"))
        );
        assert_eq!(
            parse_pid("fd=0x5"),
            Err(option_error("pid", "invalid number '0x5'"))
        );
    }

    #[test]
    fn locality() {
        assert_eq!(
            parse_locality("reject-locality-4"),
            Ok(LocalityOptions {
                reject_locality_4: true,
                allow_set_locality: false
            })
        );
        assert_eq!(
            parse_locality("allow-set-locality,reject-locality-4=false"),
            Ok(LocalityOptions {
                reject_locality_4: false,
                allow_set_locality: true
            })
        );
        assert_eq!(
            parse_locality(""),
            Err(option_error("locality", "Unknown option ''"))
        );
        assert_eq!(
            parse_locality("reject-locality-3"),
            Err(option_error(
                "locality",
                "Unknown option 'reject-locality-3'"
            ))
        );
    }

    fn flags(
        not_need_init: bool,
        startup: StartupRequest,
        disable_auto_shutdown: bool,
    ) -> FlagOptions {
        FlagOptions {
            not_need_init,
            startup,
            disable_auto_shutdown,
        }
    }

    #[test]
    fn flags_startup_and_init() {
        use StartupRequest::{Nothing, Send, Unspecified};
        assert_eq!(
            parse_flags("not-need-init"),
            Ok(flags(true, Unspecified, false))
        );
        assert_eq!(
            parse_flags("not-need-init=false"),
            Ok(flags(false, Unspecified, false))
        );
        assert_eq!(
            parse_flags("startup-clear"),
            Ok(flags(true, Send(StartupType::Clear), false))
        );
        assert_eq!(
            parse_flags("startup-state"),
            Ok(flags(true, Send(StartupType::State), false))
        );
        assert_eq!(
            parse_flags("startup-deactivated"),
            Ok(flags(true, Send(StartupType::Deactivated), false))
        );
        assert_eq!(
            parse_flags("startup-none"),
            Ok(flags(false, Nothing, false))
        );
        assert_eq!(
            parse_flags("startup-none,not-need-init,disable-auto-shutdown"),
            Ok(flags(true, Nothing, true))
        );
    }

    #[test]
    fn flags_startup_precedence() {
        use StartupRequest::Send;
        assert_eq!(
            parse_flags("startup-none,startup-deactivated,startup-state,startup-clear")
                .unwrap()
                .startup,
            Send(StartupType::Clear)
        );
        assert_eq!(
            parse_flags("startup-none,startup-deactivated,startup-state")
                .unwrap()
                .startup,
            Send(StartupType::State)
        );
        assert_eq!(
            parse_flags("startup-none,startup-deactivated")
                .unwrap()
                .startup,
            Send(StartupType::Deactivated)
        );
        assert_eq!(
            parse_flags("startup-clear=0,startup-clear").unwrap(),
            flags(false, StartupRequest::Unspecified, false)
        );
    }

    #[test]
    fn flags_errors() {
        assert_eq!(
            parse_flags("startup-clear,startup-foo"),
            Err(option_error("flags", "Unknown option 'startup-foo'"))
        );
        assert_eq!(
            parse_flags(""),
            Err(option_error("flags", "Unknown option ''"))
        );
        assert_eq!(
            parse_flags("not-need-init="),
            Err(option_error("flags", "Unknown option 'not-need-init='"))
        );
    }

    // ---- garbage never panics ----

    /// A small deterministic generator (xorshift) so the garbage is the same on every run.
    struct Garbage(u64);

    impl Garbage {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }

        /// An option string built from pieces that exercise every rule at once.
        fn option_string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "dir",
                "backend-uri",
                "mode",
                "lock",
                "file",
                "fd",
                "level",
                "prefix",
                "truncate",
                "type",
                "path",
                "port",
                "bindaddr",
                "ifname",
                "clientfd",
                "uid",
                "gid",
                "terminate",
                "disconnect",
                "not-need-init",
                "startup-clear",
                "startup-none",
                "reject-locality-4",
                "allow-set-locality",
                "tcp",
                "unixio",
                "dir://",
                "file://",
                "=",
                "==",
                ",",
                ",,",
                "{",
                "}",
                "{}",
                "-",
                "+",
                "0x",
                "0",
                "1",
                "777",
                "0777",
                "1777",
                "65535",
                "65536",
                "-1",
                "4294967296",
                "99999999999999999999",
                "::",
                "fe80::1",
                "127.0.0.1",
                " ",
                "\t",
                "é",
                "ü",
                "\u{0}",
                "\u{202e}",
                "🦀",
                "true",
                "TRUE",
                "\\",
                "\"",
                "%",
            ];
            let len = self.next() % 12;
            (0..len).map(|_| self.pick(PIECES)).collect()
        }
    }

    // ---- --key, --migration-key ----

    fn key(source: KeySource, format: KeyFormat, size: KeySize, kdf: Kdf) -> KeyOptions {
        KeyOptions {
            source,
            format,
            size,
            kdf,
            remove: false,
        }
    }

    #[test]
    fn key_defaults() {
        assert_eq!(
            parse_key("file=/k").unwrap(),
            key(
                KeySource::File("/k".into()),
                KeyFormat::Hex,
                KeySize::Aes128,
                Kdf::Pbkdf2
            )
        );
        assert_eq!(
            parse_key("pwdfd=7").unwrap(),
            key(
                KeySource::PassphraseFd(7),
                KeyFormat::Hex,
                KeySize::Aes128,
                Kdf::Pbkdf2
            )
        );
    }

    #[test]
    fn key_parameters() {
        assert_eq!(
            parse_key("fd=5,format=binary,mode=aes-256-cbc,remove").unwrap(),
            KeyOptions {
                remove: true,
                ..key(
                    KeySource::Fd(5),
                    KeyFormat::Binary,
                    KeySize::Aes256,
                    Kdf::Pbkdf2
                )
            }
        );
        assert_eq!(
            parse_key("pwdfile=/p,kdf=sha512,mode=aes-cbc,remove=0").unwrap(),
            key(
                KeySource::PassphraseFile("/p".into()),
                KeyFormat::Hex,
                KeySize::Aes128,
                Kdf::Sha512
            )
        );
        for (value, remove) in [("true", true), ("TRUE", true), ("1", true), ("yes", false)] {
            let opts = format!("file=/k,remove={value}");
            assert_eq!(parse_key(&opts).unwrap().remove, remove, "{opts}");
        }
        assert_eq!(
            parse_key("file=/a,file=/b").unwrap().source,
            KeySource::File("/a".into())
        );
    }

    #[test]
    fn key_source_precedence_file_fd_pwdfile_pwdfd() {
        let source = |opts: &str| parse_key(opts).unwrap().source;
        assert_eq!(
            source("pwdfd=4,pwdfile=/p,fd=3,file=/k"),
            KeySource::File("/k".into())
        );
        assert_eq!(source("pwdfd=4,pwdfile=/p,fd=3"), KeySource::Fd(3));
        assert_eq!(
            source("pwdfd=4,pwdfile=/p"),
            KeySource::PassphraseFile("/p".into())
        );
        assert_eq!(source("pwdfd=4,fd=-1"), KeySource::PassphraseFd(4));
    }

    #[test]
    fn key_errors_in_swtpms_order() {
        let required =
            invalid_error("Either file=, fd=, pwdfile=, or pwdfd= is required for key option");
        // Each case and message as swtpm 0.7.1 answered it.
        for (opts, expected) in [
            ("mode=foo", required.clone()),
            ("fd=-1", required.clone()),
            ("pwdfd=-1,format=x", required),
            (
                "file=/k,mode=foo",
                invalid_error("Unknown encryption mode 'foo'."),
            ),
            (
                "file=/k,format=foo",
                invalid_error("Unknown key format 'foo'."),
            ),
            (
                "pwdfile=/p,format=foo",
                invalid_error("Unknown key format 'foo'."),
            ),
            (
                "mode=foo,format=bar,file=/k",
                invalid_error("Unknown key format 'bar'."),
            ),
            (
                "pwdfile=/p,kdf=foo,mode=bar",
                invalid_error("Unknown encryption mode 'bar'."),
            ),
            ("pwdfile=/p,kdf=foo", invalid_error("Unknown kdf 'foo'.")),
            ("foo=bar", option_error("key", "Unknown option 'foo=bar'")),
            ("fd=abc", option_error("key", "invalid number 'abc'")),
            ("", option_error("key", "Unknown option ''")),
        ] {
            assert_eq!(parse_key(opts), Err(expected), "{opts:?}");
        }
        // kdf is not looked at for key files and fds.
        assert!(parse_key("file=/k,kdf=foo").is_ok());
        assert!(parse_key("fd=3,pwdfile=/p,kdf=foo").is_ok());
    }

    #[test]
    fn garbage_gives_errors_not_panics() {
        let mut garbage = Garbage(0x5eed_1234_abcd_ef01);
        for _ in 0..20_000 {
            let opts = garbage.option_string();
            let env = garbage.option_string();
            let _ = parse_tpmstate(&opts);
            let _ = parse_log(&opts);
            let _ = parse_ctrl(&opts);
            let _ = parse_server(&opts, Some(&env));
            let _ = parse_server(&opts, None);
            let _ = parse_pid(&opts);
            let _ = parse_locality(&opts);
            let _ = parse_flags(&opts);
            let _ = parse_key(&opts);
            let _ = tpmstate_from_env(Some(&opts));
            let _ = parse_c_integer(&opts, Radix::Auto);
        }
    }

    #[test]
    fn random_bytes_give_errors_not_panics() {
        let mut garbage = Garbage(42);
        for _ in 0..5_000 {
            let len = garbage.next() % 40;
            let bytes: Vec<u8> = (0..len).map(|_| (garbage.next() % 256) as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_tpmstate(&text);
            let _ = parse_ctrl(&text);
            let _ = parse_server(&text, Some(&text));
            let _ = parse_log(&text);
            let _ = parse_key(&text);
        }
    }

    #[test]
    fn oversized_inputs_give_errors() {
        let long = "a".repeat(100_000);
        assert!(parse_tpmstate(&long).is_err());
        let deep = format!("dir={}", "{".repeat(100_000));
        assert_eq!(
            parse_tpmstate(&deep),
            Err(option_error("tpmstate", "Unterminated JSON map."))
        );
        let many = "lock,".repeat(10_000) + "dir=/d";
        assert_eq!(parse_tpmstate(&many).unwrap().lock, Some(true));
        let huge_port = format!("type=tcp,port={}", "9".repeat(10_000));
        assert!(matches!(
            parse_ctrl(&huge_port),
            Err(CliError::Option { .. })
        ));
    }

    #[test]
    fn seccomp_actions() {
        assert_eq!(parse_seccomp("action=none"), Ok(seccomp::Action::None));
        assert_eq!(parse_seccomp("action=log"), Ok(seccomp::Action::Log));
        assert_eq!(parse_seccomp("action=kill"), Ok(seccomp::Action::Kill));
        assert_eq!(
            parse_seccomp("action=trap"),
            Err(CliError::Invalid(
                "Unsupported seccomp log action trap".into()
            ))
        );
        assert!(matches!(
            parse_seccomp("level=1"),
            Err(CliError::Option {
                what: "seccomp",
                ..
            })
        ));
    }
}
