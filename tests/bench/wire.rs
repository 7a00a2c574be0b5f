//! A lean data-channel client: one write per command, the response read into a reused
//! buffer (usually with one read), so that the client adds as little as possible to
//! what is measured and the same for both daemons.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::tpm2;

/// Where a daemon's `--server` listens.
#[derive(Clone, Debug)]
pub enum DataAddress {
    Unix(PathBuf),
    Tcp(u16),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Long enough for an RSA key generation on a loaded machine.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_RESPONSE: usize = 4096;

pub struct DataConn {
    stream: Stream,
    response: Vec<u8>,
}

impl DataConn {
    pub fn connect(address: &DataAddress) -> DataConn {
        let stream = match address {
            DataAddress::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .unwrap_or_else(|err| panic!("connect to {}: {err}", path.display()));
                stream.set_read_timeout(Some(RESPONSE_TIMEOUT)).unwrap();
                Stream::Unix(stream)
            }
            DataAddress::Tcp(port) => {
                let stream = TcpStream::connect(("127.0.0.1", *port))
                    .unwrap_or_else(|err| panic!("connect to TCP port {port}: {err}"));
                stream.set_read_timeout(Some(RESPONSE_TIMEOUT)).unwrap();
                stream.set_nodelay(true).unwrap();
                Stream::Tcp(stream)
            }
        };
        DataConn {
            stream,
            response: vec![0; MAX_RESPONSE],
        }
    }

    /// Sends one command and returns its whole response (framed by its size field).
    pub fn transact(&mut self, command: &[u8]) -> &[u8] {
        self.try_transact(command)
            .unwrap_or_else(|err| panic!("TPM command {:02x?}: {err}", &command[6..10]))
    }

    fn try_transact(&mut self, command: &[u8]) -> io::Result<&[u8]> {
        let written = match &mut self.stream {
            Stream::Unix(s) => s.write(command)?,
            Stream::Tcp(s) => s.write(command)?,
        };
        if written != command.len() {
            return Err(io::Error::other("command not written with one write"));
        }
        let mut filled = 0;
        loop {
            let n = match &mut self.stream {
                Stream::Unix(s) => s.read(&mut self.response[filled..])?,
                Stream::Tcp(s) => s.read(&mut self.response[filled..])?,
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
            if filled >= 10 {
                let size = tpm2::packet_size(&self.response[..filled]);
                if !(10..=MAX_RESPONSE).contains(&size) {
                    return Err(io::Error::other(format!("response size {size}")));
                }
                if filled >= size {
                    return Ok(&self.response[..size]);
                }
            }
        }
    }

    /// Shuts the connection down: the peer reads the end of the stream.
    pub fn close(&mut self) {
        let _ = match &self.stream {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Sends a command that must succeed and returns its response.
    pub fn expect_ok(&mut self, command: &[u8], what: &str) -> &[u8] {
        let response = self.transact(command);
        match tpm2::response_code(response) {
            Ok(0) => response,
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// Panics unless `response` is a success (checked after the clock was read).
pub fn check_ok(response: &[u8], what: &str) {
    if !matches!(tpm2::response_code(response), Ok(0)) {
        panic!("{what} failed: {:?}", tpm2::response_code(response));
    }
}
