//! Opening the tools' connections — a UNIX socket, a TCP connection or a device file —
//! and reading with a deadline. Both tools send a request with one write and wait a
//! bounded time for the answer.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, connect as nix_connect, getsockopt, socket,
    sockopt,
};

use super::os_reason;
use super::target::{Target, TcpTarget};
use crate::io::socket::Stream;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_UNIX_PATH: usize = 107;
/// How long to wait between attempts while a UNIX listener's backlog is full.
const BACKLOG_RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("Socket path is too long.")]
    PathTooLong(PathBuf),
    #[error("Connect failed: {}", os_reason(.source))]
    Unix {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Could not connect using UnixIO socket.")]
    UnixTimeout(PathBuf),
    #[error("getaddrinfo failed on host '{host}': {reason}")]
    Resolve {
        host: String,
        reason: String,
        #[source]
        source: io::Error,
    },
    #[error("Could not connect to host '{}' on port '{}' using TCP socket: {}", .target.host, .target.port, os_reason(.source))]
    Tcp {
        target: TcpTarget,
        #[source]
        source: io::Error,
    },
    #[error("Unable to open device '{}'.", .path.display())]
    OpenDevice {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Connects to `target`, giving up on a socket after `timeout`. A device is opened for
/// reading and writing, whatever kind of file it is.
pub fn connect(target: &Target, timeout: Duration) -> Result<Stream, ConnectError> {
    match target {
        Target::Device(path) => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Stream::File)
            .map_err(|source| ConnectError::OpenDevice {
                path: path.clone(),
                source,
            }),
        Target::Unix(path) => connect_unix(path, Instant::now() + timeout).map(Stream::Unix),
        Target::Tcp(tcp) => connect_tcp(tcp, timeout).map(Stream::Tcp),
    }
}

/// A non-blocking connect, so that a listener whose backlog stays full (swtpm serves one
/// control client at a time) makes us give up at the deadline instead of hanging.
fn connect_unix(path: &Path, deadline: Instant) -> Result<UnixStream, ConnectError> {
    if path.as_os_str().as_bytes().len() > MAX_UNIX_PATH {
        return Err(ConnectError::PathTooLong(path.to_owned()));
    }
    let failed = |errno: Errno| ConnectError::Unix {
        path: path.to_owned(),
        source: errno.into(),
    };
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(failed)?;
    let addr = UnixAddr::new(path).map_err(failed)?;
    loop {
        match nix_connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) if Instant::now() < deadline => std::thread::sleep(BACKLOG_RETRY),
            Err(Errno::EAGAIN) => return Err(ConnectError::UnixTimeout(path.to_owned())),
            Err(Errno::EINPROGRESS) => {
                if !wait_for(&fd, PollFlags::POLLOUT, deadline).map_err(failed)? {
                    return Err(ConnectError::UnixTimeout(path.to_owned()));
                }
                match getsockopt(&fd, sockopt::SocketError).map_err(failed)? {
                    0 => break,
                    errno => return Err(failed(Errno::from_raw(errno))),
                }
            }
            Err(errno) => return Err(failed(errno)),
        }
    }
    // Blocking again: reads wait with poll and a deadline of their own.
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL).map_err(failed)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).map_err(failed)?;
    Ok(UnixStream::from(fd))
}

fn connect_tcp(target: &TcpTarget, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let addresses = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|source| ConnectError::Resolve {
            host: target.host.clone(),
            reason: resolve_reason(&source),
            source,
        })?;
    let mut last_error = io::Error::from(io::ErrorKind::AddrNotAvailable);
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = err,
        }
    }
    Err(ConnectError::Tcp {
        target: target.clone(),
        source: last_error,
    })
}

/// gai_strerror's text: the standard library prefixes it with its own words.
fn resolve_reason(err: &io::Error) -> String {
    const STD_PREFIX: &str = "failed to lookup address information: ";
    let text = os_reason(err);
    match text.strip_prefix(STD_PREFIX) {
        Some(reason) => reason.to_owned(),
        None => text,
    }
}

/// Waits until `fd` is ready for `events`; `false` when the deadline passed first.
fn wait_for(fd: &impl AsFd, events: PollFlags, deadline: Instant) -> Result<bool, Errno> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), events)];
        match poll(&mut fds, timeout) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

/// Why a read with a deadline failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}", Errno::ETIMEDOUT.desc())]
    TimedOut,
    #[error("{}", os_reason(.0))]
    Io(#[source] io::Error),
}

/// One `read` of at most `buf.len()` bytes once data is there (0 at end of file), or
/// [`ReadError::TimedOut`] if nothing arrived before `deadline`.
pub fn read_before(
    stream: &mut Stream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ReadError> {
    if !wait_for(stream, PollFlags::POLLIN, deadline).map_err(|e| ReadError::Io(e.into()))? {
        return Err(ReadError::TimedOut);
    }
    loop {
        match stream.read(buf) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map_err(ReadError::Io),
        }
    }
}

/// Whether an opened device is a character device (a kernel TPM or a CUSE device).
pub fn is_character_device(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    Ok(file.metadata()?.file_type().is_char_device())
}
