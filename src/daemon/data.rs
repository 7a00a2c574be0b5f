//! The data channel's thread: reads TPM commands, runs them on the emulator, writes the
//! responses.
//!
//! This is the hot path: one read that gets the command and one write of the response,
//! made as bare system calls (see `io::fd::read_bare`), no thread hand-off. On a socket
//! the next command is first polled for with non-blocking reads for a short, adaptive
//! window (see [`super::polling`]): back-to-back commands then skip a cross-CPU
//! wake-up; a channel that falls quiet is read with a blocking read. `poll(2)` is
//! used only while a command is incomplete, to bound the wait for its rest. The
//! emulator's lock is held only while libtpms runs.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::ExitSignal;
use super::polling::{Polled, Poller};
use crate::ctrl::connection::wait_readable;
use crate::ctrl::handler::{DataChannelSlot, lock};
use crate::emulator::Emulator;
use crate::io::fd::{read_bare, write_all_bare};
use crate::io::framing::{self, Frame, MAX_COMMAND, PREFIX_LEN};
use crate::io::socket::{Listener, Stream};
use crate::log::error_chain;
use crate::{log_error, log_info};

/// How long an incomplete command waits for its next bytes before it is processed as
/// it is (and answered with libtpms' error).
const INCOMPLETE_COMMAND_GRACE: Duration = Duration::from_millis(500);
/// Room for one whole prefixed command plus a following one's start.
const BUFFER_LEN: usize = 2 * (PREFIX_LEN + MAX_COMMAND);
/// How long CMD_SET_DATAFD waits for the data thread to let go of a channel whose peer
/// already hung up (it may still answer commands that came before the hang-up).
const HANG_UP_GRACE: Duration = Duration::from_secs(2);

/// Where the data channel comes from.
pub enum DataSource {
    /// Nothing yet: QEMU hands one over with CMD_SET_DATAFD.
    FromControlChannel,
    /// `--server`: one client at a time; `disconnect` closes it after each response.
    Listener {
        listener: Listener,
        disconnect: bool,
    },
    /// `--fd`, `--server type=tcp,fd=`, a chardev: served until it closes.
    Connected(Stream),
}

/// The data channel handed over by CMD_SET_DATAFD, shared with the control thread.
#[derive(Default)]
pub struct DataSlot {
    present: AtomicBool,
    handed_over: Mutex<Option<OwnedFd>>,
    arrived: Condvar,
    /// A duplicate of the handed-over channel while it is served: the control thread
    /// looks at it to tell a channel whose peer hung up from one in use.
    watched: Mutex<Option<OwnedFd>>,
    released: Condvar,
}

impl DataSlot {
    /// A slot that already counts as taken (a server or device is the data channel).
    pub fn taken() -> DataSlot {
        DataSlot {
            present: AtomicBool::new(true),
            ..DataSlot::default()
        }
    }

    fn wait_for_fd(&self) -> OwnedFd {
        let mut slot = self.handed_over.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(fd) = slot.take() {
                return fd;
            }
            slot = self.arrived.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn released(&self) {
        let mut watched = self.lock_watched();
        *watched = None;
        self.present.store(false, Ordering::Release);
        self.released.notify_all();
    }

    fn lock_watched(&self) -> MutexGuard<'_, Option<OwnedFd>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client that closes its data channel and at once hands over a new one (as swtpm
    /// allows) must not find the old one still counted: when its peer hung up, wait for
    /// the data thread to finish with it.
    fn wait_for_hung_up_channel(&self) {
        let mut watched = self.lock_watched();
        if !watched.as_ref().is_some_and(peer_hung_up) {
            return;
        }
        let deadline = Instant::now() + HANG_UP_GRACE;
        while self.present.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            watched = self
                .released
                .wait_timeout(watched, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Whether the other end of `fd` has closed (its remaining bytes may still be unread).
fn peer_hung_up(fd: &OwnedFd) -> bool {
    // Only POLLRDHUP (a socket's peer shut down its writing side; nix has no name for
    // it) is asked for, and POLLHUP/POLLERR come unasked: any event is a hang-up. (nix's
    // `revents()` cannot be used: it gives `None` for the bit it does not know.)
    let peer_closed = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(fd.as_fd(), peer_closed)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

impl DataChannelSlot for DataSlot {
    fn has_data_channel(&self) -> bool {
        if self.present.load(Ordering::Acquire) {
            self.wait_for_hung_up_channel();
        }
        self.present.load(Ordering::Acquire)
    }

    fn hand_over(&self, fd: OwnedFd) {
        *self.lock_watched() = fd.try_clone().ok();
        self.present.store(true, Ordering::Release);
        *self.handed_over.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
        self.arrived.notify_one();
    }
}

pub struct DataChannel {
    pub emulator: Arc<Mutex<Emulator>>,
    pub slot: Arc<DataSlot>,
    pub exit: Arc<ExitSignal>,
    /// `-t/--terminate`: end the daemon when the data connection is lost.
    pub terminate: bool,
}

impl DataChannel {
    /// Serves `source` until the daemon ends.
    pub fn run(self, source: DataSource) {
        let tpm2 = lock(&self.emulator).version() == crate::tpm::TpmVersion::V2;
        let mut conn = Connection::new(tpm2);
        match source {
            DataSource::Connected(stream) => {
                conn.serve(stream, &self.emulator, &self.exit, false);
                self.exit.request(0);
            }
            DataSource::Listener {
                listener,
                disconnect,
            } => loop {
                match listener.accept() {
                    Ok(stream) => {
                        log_info!("Data client connected");
                        conn.serve(stream, &self.emulator, &self.exit, disconnect);
                        if self.terminate {
                            self.exit.request(0);
                            return;
                        }
                    }
                    Err(err) => log_error!("could not accept a data client: {err}"),
                }
            },
            DataSource::FromControlChannel => loop {
                let fd = self.slot.wait_for_fd();
                match Stream::from_owned(fd) {
                    Ok(stream) => conn.serve(stream, &self.emulator, &self.exit, false),
                    Err(err) => {
                        log_error!("the data channel passed with CMD_SET_DATAFD is unusable: {err}")
                    }
                }
                self.slot.released();
                if self.terminate {
                    self.exit.request(0);
                    return;
                }
            },
        }
    }
}

/// Buffers reused across commands and connections, so the hot path does not allocate.
struct Connection {
    tpm2: bool,
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    /// A response went out on a socket: poll for the next command before blocking.
    answered: bool,
    poller: Poller,
}

impl Connection {
    fn new(tpm2: bool) -> Connection {
        Connection {
            tpm2,
            input: vec![0; BUFFER_LEN],
            filled: 0,
            output: Vec::with_capacity(MAX_COMMAND + 8),
            answered: false,
            poller: Poller::default(),
        }
    }

    /// Serves one client until it closes (or after one response with `disconnect`).
    fn serve(
        &mut self,
        mut stream: Stream,
        emulator: &Mutex<Emulator>,
        exit: &ExitSignal,
        disconnect: bool,
    ) {
        self.filled = 0;
        self.answered = false;
        let poll_next = stream.is_socket();
        loop {
            let frame = match framing::complete_frame(&self.input[..self.filled], self.tpm2) {
                Some(frame) => frame,
                None => match self.read_more(&mut stream) {
                    Ok(Some(())) => continue,
                    Ok(None) => framing::incomplete_frame(&self.input[..self.filled], self.tpm2),
                    Err(_) => break,
                },
            };
            if self.respond(frame, &mut stream, emulator, exit).is_err() || disconnect {
                break;
            }
            self.answered = poll_next;
        }
        log_info!("Data client disconnected");
    }

    /// Reads more bytes: `Ok(None)` when an incomplete command's sender fell silent,
    /// `Err` when the peer is gone. The next command after a response is first polled
    /// for (see [`Poller`]), then waited for with a blocking read.
    fn read_more(&mut self, stream: &mut Stream) -> io::Result<Option<()>> {
        if self.filled > 0 && !wait_readable(stream, INCOMPLETE_COMMAND_GRACE)? {
            return Ok(None);
        }
        let mut opened = None;
        if self.filled == 0 && std::mem::take(&mut self.answered) {
            match self.poller.poll(stream.as_fd(), &mut self.input)? {
                Polled::Read(n) => return self.received(n),
                Polled::Nothing(at) => opened = Some(at),
            }
        }
        let n = loop {
            match read_bare(stream.as_fd(), &mut self.input[self.filled..]) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        };
        if let Some(opened) = opened {
            self.poller.missed(opened);
        }
        self.received(n)
    }

    fn received(&mut self, n: usize) -> io::Result<Option<()>> {
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.filled += n;
        Ok(Some(()))
    }

    fn respond(
        &mut self,
        frame: Frame,
        stream: &mut Stream,
        emulator: &Mutex<Emulator>,
        exit: &ExitSignal,
    ) -> io::Result<()> {
        self.output.clear();
        if frame.prefix_locality.is_some() {
            self.output.extend_from_slice(&[0; 4]);
        }
        {
            let mut emu = lock(emulator);
            if let Err(err) = emu.hold_lock_for_command() {
                // Another process has the storage (a migration destination): running
                // the command could corrupt its state. swtpm ends here too.
                log_error!("{}; terminating", error_chain(&err));
                exit.request(1);
                return Err(io::ErrorKind::PermissionDenied.into());
            }
            if let Some(locality) = frame.prefix_locality {
                emu.set_locality_unchecked(locality);
            }
            emu.process(&mut self.input[frame.start..frame.end], &mut self.output);
        }
        if frame.prefix_locality.is_some() {
            framing::wrap_prefixed_response(&mut self.output);
        }
        // Usually the buffer held exactly this command: nothing to move.
        if frame.end < self.filled {
            self.input.copy_within(frame.end..self.filled, 0);
        }
        self.filled -= frame.end;
        write_all_bare(stream.as_fd(), &self.output)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_hung_up_channel_makes_way_for_the_next() {
        let slot = Arc::new(DataSlot::default());
        let (peer, ours) = UnixStream::pair().unwrap();
        slot.hand_over(ours.into());
        assert!(slot.has_data_channel(), "a live channel counts");
        let data_thread = {
            let slot = Arc::clone(&slot);
            std::thread::spawn(move || {
                let mut stream = UnixStream::from(slot.wait_for_fd());
                let _ = stream.read(&mut [0u8; 1]);
                drop(stream);
                slot.released();
            })
        };
        drop(peer);
        assert!(
            !slot.has_data_channel(),
            "a channel whose peer hung up is waited for, not counted"
        );
        data_thread.join().unwrap();
    }
}
