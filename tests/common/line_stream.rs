//! A newline-delimited text connection over a unix stream socket, with deadlines on
//! every read. Both qtest and QMP speak one message per line.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

pub struct LineStream {
    stream: UnixStream,
    /// Bytes received but not yet returned as a line.
    pending: Vec<u8>,
}

impl LineStream {
    pub fn new(stream: UnixStream) -> io::Result<LineStream> {
        stream.set_nonblocking(false)?;
        Ok(LineStream {
            stream,
            pending: Vec::new(),
        })
    }

    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        debug_assert!(!line.contains('\n'));
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream.write_all(&bytes)
    }

    /// The next line, without its `\n`. `TimedOut` once `deadline` passes,
    /// `UnexpectedEof` if the peer closed the connection.
    pub fn read_line(&mut self, deadline: Instant) -> io::Result<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).take(end).collect();
                return String::from_utf8(line)
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no complete line"));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection",
                    ));
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => return Err(err),
            }
        }
    }
}
