//! Sending swtpm_bios' steps: a new connection per command, the command in one write,
//! the answer in one read checked against its header, TPM errors reported and counted,
//! I/O problems ending the run (cli.md §13).

use std::io::{self, Write};
use std::time::Instant;

use super::commands::permanent_flags_deactivated;
use super::sequence::{Role, Step};
use crate::tools::target::Target;
use crate::tools::transport::{self, ConnectError};
use crate::tpm::{HEADER_LEN, Header};

/// swtpm_bios reads an answer with one read of this many bytes at most.
const RESPONSE_BUFFER: usize = 1024;

/// How a run ended without an I/O problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Every command succeeded: exit 0.
    Success,
    /// At least one command returned an error code: exit 128.
    TpmErrors,
    /// `-ea` activated a deactivated TPM 1.2, which takes effect after a reset: exit 129.
    NeedsReset,
}

impl Finish {
    pub fn exit_code(self) -> u8 {
        match self {
            Finish::Success => 0,
            Finish::TpmErrors => 128,
            Finish::NeedsReset => 129,
        }
    }
}

/// An I/O problem; swtpm_bios exits 255. The texts are swtpm_bios'.
#[derive(Debug, thiserror::Error)]
pub enum BiosError {
    #[error("{}", connect_message(.0))]
    Connect(#[source] ConnectError),
    #[error("Write to file descriptor failed.")]
    Write(#[source] Option<io::Error>),
    #[error("TPM did not respond after {0} seconds.")]
    NoResponse(u64),
    #[error("Read from file descriptor failed.")]
    Read(#[source] transport::ReadError),
    #[error("Returned packet is too short.")]
    TooShort,
    #[error("Malformed response.")]
    Malformed,
    #[error("Could not write to standard output or standard error: {0}")]
    Output(#[source] io::Error),
}

/// swtpm_bios says less than swtpm_ioctl about a failed connection.
fn connect_message(err: &ConnectError) -> String {
    match err {
        ConnectError::Unix { .. } | ConnectError::UnixTimeout(_) => {
            "Could not connect using UnixIO socket.".into()
        }
        ConnectError::Tcp { .. } => "Could not connect using TCP socket.".into(),
        ConnectError::PathTooLong(_)
        | ConnectError::Resolve { .. }
        | ConnectError::OpenDevice { .. } => err.to_string(),
    }
}

/// Where messages go: TPM 1.2 errors on stderr, TPM 2 errors and the reset notice on
/// stdout (as swtpm_bios prints them).
pub struct Output<'a> {
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    pub tpm2: bool,
}

impl Output<'_> {
    fn tpm_error(&mut self, label: &str, rc: u32) -> Result<(), BiosError> {
        let line = format!("{label} returned error code 0x{rc:08x}\n");
        let sink = if self.tpm2 {
            &mut *self.stdout
        } else {
            &mut *self.stderr
        };
        sink.write_all(line.as_bytes())
            .and_then(|()| sink.flush())
            .map_err(BiosError::Output)
    }

    fn reset_notice(&mut self) -> Result<(), BiosError> {
        self.stdout
            .write_all(b"TPM requires a reset\n")
            .and_then(|()| self.stdout.flush())
            .map_err(BiosError::Output)
    }
}

/// Sends `steps` to `target` in order.
pub fn run(target: &Target, steps: &[Step], out: &mut Output<'_>) -> Result<Finish, BiosError> {
    let mut tpm_errors = false;
    let mut was_deactivated = false;
    for step in steps {
        let response = transact(target, step)?;
        let Some(header) = Header::parse(&response) else {
            return Err(BiosError::TooShort);
        };
        if header.code != 0 {
            out.tpm_error(&step.label, header.code)?;
            tpm_errors = true;
            continue;
        }
        match step.role {
            Role::Plain => {}
            Role::ReadPermanentFlags => {
                was_deactivated =
                    permanent_flags_deactivated(&response).ok_or(BiosError::Malformed)?;
            }
            Role::Activate if was_deactivated => {
                out.reset_notice()?;
                return Ok(Finish::NeedsReset);
            }
            Role::Activate => {}
        }
    }
    Ok(if tpm_errors {
        Finish::TpmErrors
    } else {
        Finish::Success
    })
}

/// One command on a connection of its own; the answer must come in one read and be as
/// long as its header says.
fn transact(target: &Target, step: &Step) -> Result<Vec<u8>, BiosError> {
    let mut stream = transport::connect(target, step.timeout).map_err(BiosError::Connect)?;
    match stream.write(&step.command) {
        Ok(n) if n == step.command.len() => {}
        Ok(_) => return Err(BiosError::Write(None)),
        Err(err) => return Err(BiosError::Write(Some(err))),
    }
    let mut response = vec![0u8; RESPONSE_BUFFER];
    let deadline = Instant::now() + step.timeout;
    let n = match transport::read_before(&mut stream, &mut response, deadline) {
        Ok(n) => n,
        Err(transport::ReadError::TimedOut) => {
            return Err(BiosError::NoResponse(step.timeout.as_secs()));
        }
        Err(err) => return Err(BiosError::Read(err)),
    };
    response.truncate(n);
    if n < HEADER_LEN {
        return Err(BiosError::TooShort);
    }
    match Header::parse(&response) {
        Some(header) if header.size as usize == n => Ok(response),
        _ => Err(BiosError::Malformed),
    }
}
