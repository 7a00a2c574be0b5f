//! Reading one control request from a connection, with swtpm's timing (ctrl-protocol.md
//! §4): the first read may carry a descriptor (SCM_RIGHTS); the few commands whose body
//! swtpm waits for must be complete within 500 ms of the first byte, or the connection
//! is closed without a response.

use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use super::protocol::{REQUEST_BUFFER, wanted_len};
use crate::io::fd::own_received;
use crate::io::socket::Stream;

/// How long swtpm waits for the rest of a request it knows to be incomplete.
pub const REQUEST_DEADLINE: Duration = Duration::from_millis(500);

pub enum Received {
    /// A request (`bytes` starts with the command code) and a descriptor sent with it.
    Request { bytes: Vec<u8>, fd: Option<OwnedFd> },
    /// The peer closed the connection (or it failed).
    Closed,
    /// The request stayed incomplete past the deadline: close without answering.
    TimedOut,
}

/// Reads the next request from `stream`.
pub fn read_request(stream: &mut Stream) -> Received {
    let mut bytes = vec![0u8; REQUEST_BUFFER];
    let (mut filled, fd) = match first_read(stream, &mut bytes) {
        Ok((0, _)) | Err(_) => return Received::Closed,
        Ok(got) => got,
    };
    let deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        let wanted = wanted_len(&bytes[..filled]).min(REQUEST_BUFFER);
        if filled >= wanted {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_readable(stream, left) {
            Ok(true) => {}
            Ok(false) => return Received::TimedOut,
            Err(_) => return Received::Closed,
        }
        match stream.read(&mut bytes[filled..wanted]) {
            Ok(0) | Err(_) => return Received::Closed,
            Ok(n) => filled += n,
        }
    }
    bytes.truncate(filled);
    Received::Request { bytes, fd }
}

/// The first read: `recvmsg` on UNIX sockets so that a descriptor can come along.
/// Only the first descriptor of the first message is kept, as in swtpm.
fn first_read(stream: &mut Stream, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    if !stream.is_unix() {
        return Ok((stream.read(buf)?, None));
    }
    let raw = stream.as_fd().as_raw_fd();
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(raw, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut received = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // Own every descriptor so that extras are closed, keep the first.
                let owned = own_received(fd);
                received.get_or_insert(owned);
            }
        }
    }
    Ok((msg.bytes, received))
}

/// Waits until `stream` is readable; `Ok(false)` when `timeout` passed first.
pub fn wait_readable(stream: &Stream, timeout: Duration) -> io::Result<bool> {
    let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}
