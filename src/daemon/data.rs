//! The data channel's thread: reads TPM commands, runs them on the emulator, writes the
//! responses.
//!
//! This is the hot path. A connected channel is served with blocking reads: one `read`
//! and one `write` per command, nothing else (no poll, no thread hand-off). `poll` is
//! used only while a command is incomplete, to bound the wait for its rest. The
//! emulator's lock is held only while libtpms runs.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::ExitSignal;
use crate::ctrl::connection::wait_readable;
use crate::ctrl::handler::{DataChannelSlot, lock};
use crate::emulator::Emulator;
use crate::io::framing::{self, Frame, MAX_COMMAND, PREFIX_LEN};
use crate::io::socket::{Listener, Stream};
use crate::log::error_chain;
use crate::{log_error, log_info};

/// How long an incomplete command waits for its next bytes before it is processed as
/// it is (and answered with libtpms' error).
const INCOMPLETE_COMMAND_GRACE: Duration = Duration::from_millis(500);
/// Room for one whole prefixed command plus a following one's start.
const BUFFER_LEN: usize = 2 * (PREFIX_LEN + MAX_COMMAND);

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
        self.present.store(false, Ordering::Release);
    }
}

impl DataChannelSlot for DataSlot {
    fn has_data_channel(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    fn hand_over(&self, fd: OwnedFd) {
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
}

impl Connection {
    fn new(tpm2: bool) -> Connection {
        Connection {
            tpm2,
            input: vec![0; BUFFER_LEN],
            filled: 0,
            output: Vec::with_capacity(MAX_COMMAND + 8),
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
        }
        log_info!("Data client disconnected");
    }

    /// Reads more bytes: `Ok(None)` when an incomplete command's sender fell silent,
    /// `Err` when the peer is gone.
    fn read_more(&mut self, stream: &mut Stream) -> io::Result<Option<()>> {
        if self.filled > 0 && !wait_readable(stream, INCOMPLETE_COMMAND_GRACE)? {
            return Ok(None);
        }
        loop {
            match stream.read(&mut self.input[self.filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.filled += n;
                    return Ok(Some(()));
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
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
        self.input.copy_within(frame.end..self.filled, 0);
        self.filled -= frame.end;
        stream.write_all(&self.output)
    }
}
