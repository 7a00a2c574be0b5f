//! Carries out one control request against the emulator and builds its response.
//!
//! GET_TPMESTABLISHED and CANCEL_TPM_CMD never wait for the emulator's lock: QEMU sends
//! them from a vCPU, possibly while a long TPM command (RSA key generation) runs on the
//! data channel's thread. Every other command waits for the running command to end.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use super::protocol::{self, Command, Request, result, words};
use crate::emulator::{AfterSetState, Emulator, Status};
use crate::libtpms::Canceller;
use crate::log_error;

/// Largest state blob SET_STATEBLOB accepts (swtpm's development branch uses the same
/// bound); real blobs are a few KiB to a few tens of KiB.
pub const MAX_STATE_BLOB: u32 = 512 * 1024;
/// HASH_DATA is fed to libtpms in pieces of this size.
const HASH_CHUNK: usize = 4096;

/// The data channel as the control channel sees it, for CMD_SET_DATAFD.
pub trait DataChannelSlot {
    /// A data channel exists (a `--server`, a chardev, or an earlier SET_DATAFD).
    fn has_data_channel(&self) -> bool;
    /// Makes `fd` the data channel.
    fn hand_over(&self, fd: OwnedFd);
}

/// What the control connection does after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// Send the reply, then end the process with this exit status.
    ReplyAndExit(Vec<u8>, i32),
    /// Close the connection without a reply (the request could not be read).
    Close,
}

pub struct ControlHandler {
    emulator: Arc<Mutex<Emulator>>,
    status: Arc<Status>,
    canceller: Canceller,
    capabilities: u32,
    config_flags: u32,
}

fn reply_rc(rc: u32) -> Outcome {
    Outcome::Reply(words([rc]))
}

impl ControlHandler {
    pub fn new(
        emulator: Arc<Mutex<Emulator>>,
        capabilities: u32,
        config_flags: u32,
    ) -> ControlHandler {
        let (status, canceller) = {
            let emu = lock(&emulator);
            (emu.status(), emu.canceller())
        };
        ControlHandler {
            emulator,
            status,
            canceller,
            capabilities,
            config_flags,
        }
    }

    /// Handles one request: `request` is the code and the bytes that came with it, `fd`
    /// a descriptor passed with it, and `rest` the connection, for bodies that continue.
    pub fn handle(
        &self,
        request: &[u8],
        fd: Option<OwnedFd>,
        rest: &mut dyn Read,
        data: &dyn DataChannelSlot,
    ) -> Outcome {
        let Some(code) = request.get(..4) else {
            return Outcome::Close;
        };
        let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
        let body = &request[4..];
        let Some(cmd) = Command::from_code(code) else {
            return reply_rc(result::TPM_BAD_ORDINAL);
        };
        if cmd.needs_running_tpm() && !self.status.running() {
            return reply_rc(result::TPM_BAD_ORDINAL);
        }
        if cmd == Command::SetStateBlob {
            return self.set_state_blob(body, rest);
        }
        let request = match protocol::decode(cmd, body) {
            Ok(request) => request,
            Err(rc) => return reply_rc(rc),
        };
        match request {
            Request::GetCapability => {
                Outcome::Reply(words([result::TPM_SUCCESS, self.capabilities]))
            }
            Request::GetTpmEstablished => {
                let mut reply = words([result::TPM_SUCCESS, 0]);
                reply[4] = u8::from(self.status.established());
                Outcome::Reply(reply)
            }
            Request::CancelTpmCmd => reply_rc(self.canceller.cancel()),
            Request::GetConfig => Outcome::Reply(words([result::TPM_SUCCESS, self.config_flags])),
            Request::SetDatafd => {
                if data.has_data_channel() {
                    return reply_rc(result::TPM_IOERROR);
                }
                match fd {
                    Some(fd) => {
                        data.hand_over(fd);
                        reply_rc(result::TPM_SUCCESS)
                    }
                    None => reply_rc(result::TPM_BAD_PARAMETER),
                }
            }
            request => self.with_emulator(request, rest),
        }
    }

    /// Requests that need the emulator, under its lock.
    fn with_emulator(&self, request: Request<'_>, rest: &mut dyn Read) -> Outcome {
        let mut emu = lock(&self.emulator);
        let rc = match request {
            Request::Init { flags } => emu.init(flags),
            Request::Shutdown => {
                emu.stop();
                return Outcome::ReplyAndExit(words([result::TPM_SUCCESS]), 0);
            }
            Request::Stop => {
                emu.stop();
                result::TPM_SUCCESS
            }
            Request::SetLocality { locality } => emu.set_locality(locality),
            Request::ResetTpmEstablished { locality } => emu.reset_established(locality),
            Request::HashStart => emu.hash_start(),
            Request::HashData { length, first } => return hash_data(&mut emu, length, first, rest),
            Request::HashEnd => emu.hash_end(),
            Request::StoreVolatile => emu.store_volatile(),
            Request::GetStateBlob {
                flags,
                blob_type,
                offset,
            } => {
                return Outcome::Reply(emu.get_state_blob(flags, blob_type, offset));
            }
            Request::SetBufferSize { size } => {
                return match emu.set_buffer_size(size) {
                    Ok(sizes) => Outcome::Reply(words([
                        result::TPM_SUCCESS,
                        sizes.current,
                        sizes.min,
                        sizes.max,
                    ])),
                    Err(rc) => reply_rc(rc),
                };
            }
            Request::GetInfo { flags, offset } => {
                return Outcome::Reply(emu.get_info(flags, offset));
            }
            Request::LockStorage { retries } => emu.lock_storage(retries),
            // Answered in `handle` without the emulator.
            Request::GetCapability
            | Request::GetTpmEstablished
            | Request::CancelTpmCmd
            | Request::GetConfig
            | Request::SetDatafd
            | Request::SetStateBlob { .. } => result::TPM_BAD_ORDINAL,
        };
        reply_rc(rc)
    }

    /// SET_STATEBLOB: the blob is read completely before the emulator is locked, so a
    /// slow sender never holds up the data channel.
    fn set_state_blob(&self, body: &[u8], rest: &mut dyn Read) -> Outcome {
        // The header (12 bytes) is always there: the request reader waits for it.
        let announced = match body.get(8..12) {
            Some(len) => u32::from_be_bytes([len[0], len[1], len[2], len[3]]),
            None => return reply_rc(result::TPM_BAD_PARAMETER),
        };
        if announced > MAX_STATE_BLOB {
            log_error!("refused a state blob of {announced} bytes (at most {MAX_STATE_BLOB})");
            return Outcome::Close;
        }
        let mut full = body.to_vec();
        let wanted = 12 + announced as usize;
        if full.len() < wanted {
            let missing = wanted - full.len();
            match read_up_to(rest, missing, &mut full) {
                Ok(got) if got == missing => {}
                Ok(_) => return reply_rc(result::TPM_BAD_PARAMETER),
                Err(_) => return Outcome::Close,
            }
        }
        if self.status.running() {
            return reply_rc(result::TPM_BAD_ORDINAL);
        }
        let Request::SetStateBlob {
            flags,
            blob_type,
            first,
            ..
        } = (match protocol::decode(Command::SetStateBlob, &full) {
            Ok(request) => request,
            Err(rc) => return reply_rc(rc),
        })
        else {
            return reply_rc(result::TPM_FAIL);
        };
        let mut emu = lock(&self.emulator);
        if emu.is_running() {
            return reply_rc(result::TPM_BAD_ORDINAL);
        }
        match emu.set_state_blob(blob_type, flags, first) {
            (rc, AfterSetState::Continue) => reply_rc(rc),
            (rc, AfterSetState::Terminate) => Outcome::ReplyAndExit(words([rc]), 1),
        }
    }
}

/// HASH_DATA: hashes what came with the request, then reads the rest of `length`.
fn hash_data(emu: &mut Emulator, length: u32, first: &[u8], rest: &mut dyn Read) -> Outcome {
    let mut rc = emu.hash_data(first);
    let mut remaining = length as usize - first.len();
    let mut chunk = vec![0u8; HASH_CHUNK.min(remaining)];
    while remaining > 0 {
        let want = remaining.min(chunk.len());
        match rest.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => return reply_rc(result::TPM_IOERROR),
            Ok(n) => {
                if rc == result::TPM_SUCCESS {
                    rc = emu.hash_data(&chunk[..n]);
                }
                remaining -= n;
            }
        }
    }
    reply_rc(rc)
}

/// Reads until `count` more bytes were appended to `out` or the peer closed.
fn read_up_to(from: &mut dyn Read, count: usize, out: &mut Vec<u8>) -> io::Result<usize> {
    let start = out.len();
    from.take(count as u64).read_to_end(out)?;
    Ok(out.len() - start)
}

/// A panic while the lock was held would poison it; the emulator's state is still the
/// best there is, so keep serving rather than taking the VM's TPM down.
pub fn lock(emulator: &Mutex<Emulator>) -> MutexGuard<'_, Emulator> {
    emulator
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
