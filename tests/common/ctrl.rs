//! A client for swtpm's control channel, as QEMU and swtpm_ioctl speak it: one request
//! per write, then a response whose length depends on the command and its result.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

pub const GET_CAPABILITY: u32 = 0x01;
pub const INIT: u32 = 0x02;
pub const SHUTDOWN: u32 = 0x03;
pub const GET_TPMESTABLISHED: u32 = 0x04;
pub const SET_LOCALITY: u32 = 0x05;
pub const HASH_START: u32 = 0x06;
pub const HASH_DATA: u32 = 0x07;
pub const HASH_END: u32 = 0x08;
pub const CANCEL_TPM_CMD: u32 = 0x09;
pub const STORE_VOLATILE: u32 = 0x0A;
pub const RESET_TPMESTABLISHED: u32 = 0x0B;
pub const GET_STATEBLOB: u32 = 0x0C;
pub const SET_STATEBLOB: u32 = 0x0D;
pub const STOP: u32 = 0x0E;
pub const GET_CONFIG: u32 = 0x0F;
pub const SET_DATAFD: u32 = 0x10;
pub const SET_BUFFERSIZE: u32 = 0x11;
pub const GET_INFO: u32 = 0x12;
pub const LOCK_STORAGE: u32 = 0x13;

pub const TPM_BAD_PARAMETER: u32 = 0x03;
pub const TPM_FAIL: u32 = 0x09;
pub const TPM_BAD_ORDINAL: u32 = 0x0A;
pub const TPM_IOERROR: u32 = 0x1F;
pub const TPM_BAD_LOCALITY: u32 = 0x3D;
pub const TPM_RETRY: u32 = 0x800;

const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A control response: the result word and the bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rc: u32,
    pub body: Vec<u8>,
}

impl Reply {
    /// The big-endian u32 at byte `at` of the body.
    pub fn word(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.body[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The whole response as it came over the wire.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = self.rc.to_be_bytes().to_vec();
        out.extend_from_slice(&self.body);
        out
    }
}

pub struct CtrlClient {
    pub conn: Conn,
}

impl CtrlClient {
    pub fn unix(path: &Path) -> CtrlClient {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|err| panic!("connect to control socket {}: {err}", path.display()));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        CtrlClient {
            conn: Conn::Unix(stream),
        }
    }

    pub fn tcp(port: u16) -> CtrlClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|err| panic!("connect to control port {port}: {err}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        CtrlClient {
            conn: Conn::Tcp(stream),
        }
    }

    pub fn from_unix_stream(stream: UnixStream) -> CtrlClient {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        CtrlClient {
            conn: Conn::Unix(stream),
        }
    }

    /// Writes bytes with one write.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let written = self.conn.write(bytes).expect("write control request");
        assert_eq!(written, bytes.len(), "control request written in one write");
    }

    /// Writes `code` + `body` in one write and reads the response.
    pub fn request(&mut self, code: u32, body: &[u8]) -> Reply {
        self.send_raw(&request_bytes(code, body));
        self.read_reply(code)
    }

    /// SET_DATAFD with `fd` attached as SCM_RIGHTS.
    pub fn set_datafd(&mut self, fd: BorrowedFd<'_>) -> Reply {
        let Conn::Unix(stream) = &self.conn else {
            panic!("SET_DATAFD needs a UNIX socket")
        };
        let code = SET_DATAFD.to_be_bytes();
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            stream.as_fd().as_raw_fd(),
            &[IoSlice::new(&code)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg SET_DATAFD");
        self.read_reply(SET_DATAFD)
    }

    /// Reads the response to `code`: error responses are 4 bytes (GET_STATEBLOB on a
    /// running TPM always has its 16-byte header).
    pub fn read_reply(&mut self, code: u32) -> Reply {
        let rc = u32::from_be_bytes(self.read_n(4).try_into().unwrap());
        let body = match code {
            GET_STATEBLOB if rc != TPM_BAD_ORDINAL => {
                let header = self.read_n(12);
                let len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
                let mut body = header;
                body.extend(self.read_n(len));
                body
            }
            _ if rc != 0 => Vec::new(),
            GET_CAPABILITY | GET_TPMESTABLISHED | GET_CONFIG => self.read_n(4),
            SET_BUFFERSIZE => self.read_n(12),
            GET_INFO => {
                let header = self.read_n(8);
                let len = u32::from_be_bytes(header[4..8].try_into().unwrap()) as usize;
                let mut body = header;
                body.extend(self.read_n(len));
                body
            }
            _ => Vec::new(),
        };
        Reply { rc, body }
    }

    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.conn
            .read_exact(&mut buf)
            .unwrap_or_else(|err| panic!("read {n} control bytes: {err}"));
        buf
    }

    /// Waits for the peer to close the connection; returns the bytes that came before.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        self.conn
            .read_to_end(&mut all)
            .expect("read until the daemon closes");
        all
    }

    /// Sets how long reads wait before failing with `WouldBlock`/`TimedOut`.
    pub fn set_read_timeout(&self, timeout: Duration) {
        match &self.conn {
            Conn::Unix(s) => s.set_read_timeout(Some(timeout)).unwrap(),
            Conn::Tcp(s) => s.set_read_timeout(Some(timeout)).unwrap(),
        }
    }
}

pub fn request_bytes(code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Big-endian u32 words, concatenated.
pub fn be(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}
