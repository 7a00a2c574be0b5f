//! Where a tool sends its requests: a device file, a TCP server or a UNIX socket, and the
//! `--tcp [<host>]:[<port>]` syntax both tools share (cli.md §12, §13). Pure.

use std::path::PathBuf;

use super::number::{self, Radix};

/// The host of `--tcp :<port>`.
pub const DEFAULT_HOST: &str = "127.0.0.1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `--tpm-device <path>` or the tool's default device.
    Device(PathBuf),
    Tcp(TcpTarget),
    Unix(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpTarget {
    /// A name or address for getaddrinfo; may be empty (`--tcp ''`), which then fails to
    /// resolve as it does for swtpm's tools.
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("Invalid port '{0}'")]
    Invalid(String),
    #[error("Port '{0}' outside valid range.")]
    OutOfRange(String),
}

/// Parses `[<host>]:[<port>]`. The last `:` separates the port, so an IPv6 address
/// cannot be combined with a port (as in swtpm's tools); without any `:` the whole text
/// is the host. Like `strtoul`, the port may be followed by other text (`6546x`).
/// A lone `:` means both defaults, but `<host>:` lacks its port (swtpm's tools agree).
pub fn parse_tcp(arg: &str, default_port: u16) -> Result<TcpTarget, PortError> {
    let (host, port) = match arg.rsplit_once(':') {
        None => (arg, default_port),
        Some(("", "")) => (DEFAULT_HOST, default_port),
        Some(("", port)) => (DEFAULT_HOST, parse_port(port)?),
        Some((host, port)) => (host, parse_port(port)?),
    };
    Ok(TcpTarget {
        host: host.to_owned(),
        port,
    })
}

/// A decimal port number; text after the digits is ignored, as `strtoul` users do.
pub fn parse_port(text: &str) -> Result<u16, PortError> {
    let number =
        number::leading(text, Radix::Decimal).ok_or_else(|| PortError::Invalid(text.into()))?;
    // swtpm's tools quote the argument minus its first character here and take `-1` as
    // port 65535; we quote the port and refuse negative numbers.
    if number.negative {
        return Err(PortError::OutOfRange(text.into()));
    }
    u16::try_from(number.value).map_err(|_| PortError::OutOfRange(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Result<TcpTarget, PortError> {
        Ok(TcpTarget {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn host_and_port_defaults() {
        assert_eq!(parse_tcp(":10000", 6546), tcp("127.0.0.1", 10000));
        assert_eq!(parse_tcp(":", 6546), tcp("127.0.0.1", 6546));
        assert_eq!(parse_tcp("localhost", 6545), tcp("localhost", 6545));
        assert_eq!(parse_tcp("", 6545), tcp("", 6545));
        assert_eq!(parse_tcp("h:1x", 6545), tcp("h", 1));
        assert_eq!(parse_tcp("h: 5", 6545), tcp("h", 5));
        assert_eq!(parse_tcp("::1", 6545), tcp(":", 1));
    }

    #[test]
    fn bad_ports() {
        assert_eq!(parse_tcp("h:abc", 1), Err(PortError::Invalid("abc".into())));
        assert_eq!(parse_tcp("h:", 1), Err(PortError::Invalid(String::new())));
        assert_eq!(parse_tcp("::1:", 1), Err(PortError::Invalid(String::new())));
        assert_eq!(
            parse_tcp("h:65536", 1),
            Err(PortError::OutOfRange("65536".into()))
        );
        assert_eq!(
            parse_tcp("h:-1", 1),
            Err(PortError::OutOfRange("-1".into()))
        );
        assert_eq!(
            parse_tcp("h:99999999999999999999999", 1),
            Err(PortError::OutOfRange("99999999999999999999999".into()))
        );
        assert_eq!(parse_tcp("h:65535", 1), tcp("h", 65535));
        assert_eq!(parse_tcp("h:0", 1), tcp("h", 0));
    }
}
