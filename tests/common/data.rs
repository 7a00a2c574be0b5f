//! A client for the daemon's data channel: raw TPM commands, one write each, and the
//! response read by its header's size.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::ctrl::Conn;
use super::tpm2::TpmTransport;

pub struct DataClient {
    pub conn: Conn,
}

impl DataClient {
    pub fn tcp(port: u16) -> DataClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|err| panic!("connect to data port {port}: {err}"));
        DataClient::from_tcp(stream)
    }

    pub fn from_tcp(stream: TcpStream) -> DataClient {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        DataClient {
            conn: Conn::Tcp(stream),
        }
    }

    pub fn unix(stream: UnixStream) -> DataClient {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        DataClient {
            conn: Conn::Unix(stream),
        }
    }

    /// Writes `bytes` with one write.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        assert_eq!(
            self.conn.write(bytes).expect("write to data channel"),
            bytes.len()
        );
    }

    /// Reads one response: the header, then the rest its size announces.
    pub fn read_response(&mut self) -> Vec<u8> {
        let mut response = vec![0u8; 10];
        self.conn
            .read_exact(&mut response)
            .expect("read response header");
        let size = u32::from_be_bytes(response[2..6].try_into().unwrap()) as usize;
        assert!((10..=4096).contains(&size), "response size {size}");
        response.resize(size, 0);
        self.conn
            .read_exact(&mut response[10..])
            .expect("read response body");
        response
    }

    /// Reads whatever one `read` returns (clients like swtpm_setup read responses so).
    pub fn read_once(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 8192];
        let n = loop {
            match self.conn.read(&mut buf) {
                // A socket read with a timeout returns EINTR when this process is stopped
                // and resumed, even without a signal handler (signal(7)).
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                result => break result.expect("read from data channel"),
            }
        };
        buf.truncate(n);
        buf
    }
}

impl DataClient {
    /// Whether a response is waiting to be read (without reading it).
    pub fn response_ready(&self) -> bool {
        use std::os::fd::AsFd;
        let fd = match &self.conn {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        };
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) > 0
    }
}

impl TpmTransport for DataClient {
    fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        self.send_raw(command);
        self.read_response()
    }
}
