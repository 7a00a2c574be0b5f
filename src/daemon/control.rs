//! The main thread: serves the control channel (one client at a time, as swtpm) and
//! waits for the reasons to end the daemon (signals, the data thread, SHUTDOWN).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::ctrl::connection::{Received, read_request};
use crate::ctrl::handler::{ControlHandler, DataChannelSlot, Outcome};
use crate::io::socket::{Listener, Stream};
use crate::{log_error, log_info};

/// Where control clients come from.
pub enum ControlSource {
    None,
    Listener(Listener),
    /// `clientfd=`: one connection for the daemon's life.
    Connected(Stream),
}

pub struct ControlLoop<'a> {
    pub handler: ControlHandler,
    pub data: &'a dyn DataChannelSlot,
    /// `--ctrl ...,terminate`: end the daemon when the control client goes away.
    pub terminate: bool,
    /// Readable when the daemon should end (a signal arrived or the data thread asks).
    pub wake: UnixStream,
}

impl ControlLoop<'_> {
    /// Runs until the daemon should end, and returns the exit status the control
    /// channel asked for (`None` when the reason came through `wake`).
    pub fn run(&mut self, source: ControlSource) -> Option<i32> {
        let (listener, mut client) = match source {
            ControlSource::None => (None, None),
            ControlSource::Listener(listener) => (Some(listener), None),
            ControlSource::Connected(stream) => (None, Some(stream)),
        };
        loop {
            let (wake_ready, channel_ready) = match self.wait(listener.as_ref(), client.as_ref()) {
                Ok(ready) => ready,
                Err(err) => {
                    log_error!("waiting for the control channel failed: {err}");
                    return Some(1);
                }
            };
            if wake_ready {
                let mut drain = [0u8; 16];
                let _ = self.wake.read(&mut drain);
                return None;
            }
            if !channel_ready {
                continue;
            }
            match (&mut client, &listener) {
                (Some(stream), _) => match self.serve_one(stream) {
                    Served::Continue => {}
                    Served::Exit(status) => return Some(status),
                    Served::Disconnected => {
                        log_info!("Control client disconnected");
                        client = None;
                        if self.terminate {
                            return Some(0);
                        }
                    }
                },
                (None, Some(listener)) => match listener.accept() {
                    Ok(stream) => client = Some(stream),
                    Err(err) => log_error!("could not accept a control client: {err}"),
                },
                (None, None) => {}
            }
        }
    }

    /// Polls the wake socket and the control channel (the client if there is one, the
    /// listener otherwise): one client at a time, as swtpm.
    fn wait(
        &self,
        listener: Option<&Listener>,
        client: Option<&Stream>,
    ) -> std::io::Result<(bool, bool)> {
        let channel = client
            .map(|c| c.as_fd())
            .or_else(|| listener.map(|l| l.as_fd()));
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = channel {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ok((ready(&fds[0]), fds.get(1).is_some_and(ready)))
    }

    fn serve_one(&self, stream: &mut Stream) -> Served {
        let (bytes, fd) = match read_request(stream) {
            Received::Request { bytes, fd } => (bytes, fd),
            Received::Closed | Received::TimedOut => return Served::Disconnected,
        };
        match self.handler.handle(&bytes, fd, stream, self.data) {
            Outcome::Reply(reply) => match stream.write_all(&reply) {
                Ok(()) => Served::Continue,
                Err(_) => Served::Disconnected,
            },
            Outcome::ReplyAndExit(reply, status) => {
                let _ = stream.write_all(&reply);
                Served::Exit(status)
            }
            Outcome::Close => Served::Disconnected,
        }
    }
}

enum Served {
    Continue,
    Disconnected,
    Exit(i32),
}
