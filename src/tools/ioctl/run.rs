//! Running one `swtpm_ioctl` command over a control connection: the request, its
//! response, and the output swtpm_ioctl prints (cli.md §12, ctrl-protocol.md §5, §9).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::args::{Action, HashInput, Invocation};
use super::{RESPONSE_TIMEOUT, ptm_name};
use crate::ctrl::protocol::{
    self, BLOB_TYPE_PERMANENT, BLOB_TYPE_SAVESTATE, BLOB_TYPE_VOLATILE, Command,
    INIT_FLAG_DELETE_VOLATILE, STATE_FLAG_DECRYPTED, result, words,
};
use crate::io::socket::Stream;
use crate::tools::os_reason;
use crate::tools::target::Target;
use crate::tools::transport::{self, ConnectError, ReadError};

/// HASH_DATA carries at most this many bytes (the size of swtpm's `ptm_hdata` buffer).
const HASH_CHUNK: usize = 4096;
/// No answer of a control channel is anywhere near this long; a longer announced length
/// is a broken peer, not a reason to allocate.
const MAX_RESPONSE: usize = 64 << 20;
/// State blob files are read whole; SET_STATEBLOB announces the size in 32 bits.
const MAX_BLOB_FILE: u64 = u32::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum IoctlError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "Unable to use device '{}': it is a character device, and CUSE devices are not \
         supported by this build; use --unix or --tcp with the emulator's control channel.",
        .0.display()
    )]
    CuseDevice(PathBuf),
    #[error("Could not check device '{}': {}", .path.display(), os_reason(.source))]
    Device {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The command was not written as documented: print the usage and exit 1.
    #[error("the command is not written as in the usage text")]
    NotAsDocumented,
    #[error("Could not execute {}: {source}", ptm_name(*.command))]
    Execute {
        command: Command,
        #[source]
        source: ExchangeError,
    },
    #[error("TPM result from {}: 0x{rc:x}", ptm_name(*.command))]
    TpmResult { command: Command, rc: u32 },
    #[error("Unknown TPM state type '{0}'")]
    UnknownBlobType(String),
    #[error("Could not open file '{}' for {}: {}", .path.display(), .purpose, os_reason(.source))]
    OpenFile {
        path: PathBuf,
        purpose: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("Could not read file '{}': {}", .path.display(), os_reason(.source))]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Could not write file '{}': {}", .path.display(), os_reason(.source))]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("File '{}' is too large for a state blob ({size} bytes).", .path.display())]
    BlobTooLarge { path: PathBuf, size: u64 },
    #[error("Could not read the data to hash from standard input: {}", os_reason(.0))]
    Stdin(#[source] io::Error),
    #[error("Could not write to standard output: {}", os_reason(.0))]
    Stdout(#[source] io::Error),
}

/// Why a request got no complete response.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{}", os_reason(.0))]
    Write(#[source] io::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the connection closed after {received} of {expected} response bytes")]
    Closed { received: usize, expected: usize },
    #[error("the response announces {0} bytes, more than a control response can have")]
    TooLong(usize),
}

/// Connects to the target and runs the command; output goes to `stdout`, `-h -` reads
/// `stdin`.
pub fn run(
    invocation: &Invocation,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> Result<(), IoctlError> {
    let stream = transport::connect(&invocation.target, RESPONSE_TIMEOUT)?;
    if let Stream::File(file) = &stream {
        refuse_character_device(file, &invocation.target)?;
    }
    if !invocation.as_documented {
        return Err(IoctlError::NotAsDocumented);
    }
    let mut control = Control { stream };
    let output = match &invocation.action {
        Action::GetCapability => {
            let response = control.checked(Command::GetCapability, &[])?;
            format!("ptm capability is 0x{:x}\n", word(&response, 4))
        }
        Action::Init => control.quiet(Command::Init, &words([INIT_FLAG_DELETE_VOLATILE]))?,
        Action::Stop => control.quiet(Command::Stop, &[])?,
        Action::Shutdown => control.quiet(Command::Shutdown, &[])?,
        Action::StoreVolatile => control.quiet(Command::StoreVolatile, &[])?,
        Action::Cancel => control.quiet(Command::CancelTpmCmd, &[])?,
        Action::GetEstablished => {
            let response = control.checked(Command::GetTpmEstablished, &[])?;
            format!(
                "tpmEstablished is {}\n",
                response.get(4).copied().unwrap_or(0)
            )
        }
        Action::ResetEstablished { locality } => {
            control.quiet(Command::ResetTpmEstablished, &[*locality])?
        }
        Action::SetLocality { locality } => control.quiet(Command::SetLocality, &[*locality])?,
        Action::Hash(input) => {
            hash(&mut control, input, stdin)?;
            String::new()
        }
        Action::GetConfig => {
            let response = control.checked(Command::GetConfig, &[])?;
            format!("ptm configuration flags: 0x{:x}\n", word(&response, 4))
        }
        Action::SetBufferSize { size } => {
            let response = control.checked(Command::SetBufferSize, &words([*size]))?;
            format!(
                "TPM buffersize: {}\nminimum size  : {}\nmaximum size  : {}\n",
                word(&response, 4),
                word(&response, 8),
                word(&response, 12)
            )
        }
        Action::GetInfo { flags } => info(&mut control, *flags)?,
        Action::LockStorage { retries } => {
            control.quiet(Command::LockStorage, &words([*retries]))?
        }
        Action::Save { blob_type, file } => {
            save(&mut control, blob_type_code(blob_type)?, file)?;
            String::new()
        }
        Action::Load { blob_type, file } => {
            load(&mut control, blob_type_code(blob_type)?, file)?;
            String::new()
        }
    };
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(IoctlError::Stdout)
}

/// swtpm_ioctl would drive a character device with CUSE ioctls; this build has no CUSE.
fn refuse_character_device(file: &File, target: &Target) -> Result<(), IoctlError> {
    let Target::Device(path) = target else {
        return Ok(());
    };
    match transport::is_character_device(file) {
        Ok(false) => Ok(()),
        Ok(true) => Err(IoctlError::CuseDevice(path.clone())),
        Err(source) => Err(IoctlError::Device {
            path: path.clone(),
            source,
        }),
    }
}

/// The big-endian u32 at `at`; responses are complete when this is called.
fn word(response: &[u8], at: usize) -> u32 {
    response
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn blob_type_code(name: &std::ffi::OsStr) -> Result<u32, IoctlError> {
    match name.as_encoded_bytes() {
        b"permanent" => Ok(BLOB_TYPE_PERMANENT),
        b"volatile" => Ok(BLOB_TYPE_VOLATILE),
        b"savestate" => Ok(BLOB_TYPE_SAVESTATE),
        _ => Err(IoctlError::UnknownBlobType(
            name.to_string_lossy().into_owned(),
        )),
    }
}

/// A control connection: one request per write, each response read to its full length.
struct Control {
    stream: Stream,
}

impl Control {
    fn send(&mut self, command: Command, bytes: &[u8]) -> Result<(), IoctlError> {
        self.stream
            .write_all(bytes)
            .map_err(|err| execute_error(command, ExchangeError::Write(err)))
    }

    /// Sends `command` with `body` and returns the whole response, whatever its result.
    fn exchange(&mut self, command: Command, body: &[u8]) -> Result<Vec<u8>, IoctlError> {
        self.send(command, &protocol::encode_request(command, body))?;
        self.receive(command)
    }

    fn receive(&mut self, command: Command) -> Result<Vec<u8>, IoctlError> {
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        let mut response = Vec::new();
        loop {
            let expected = protocol::response_len(command, &response);
            if response.len() >= expected {
                return Ok(response);
            }
            if expected > MAX_RESPONSE {
                return Err(execute_error(command, ExchangeError::TooLong(expected)));
            }
            self.read_more(command, &mut response, expected, deadline)?;
        }
    }

    /// Appends what one read returns, up to `expected` bytes in all.
    fn read_more(
        &mut self,
        command: Command,
        buffer: &mut Vec<u8>,
        expected: usize,
        deadline: Instant,
    ) -> Result<(), IoctlError> {
        let have = buffer.len();
        buffer.resize(expected, 0);
        let got = transport::read_before(&mut self.stream, &mut buffer[have..], deadline)
            .map_err(|err| execute_error(command, err.into()))?;
        buffer.truncate(have + got);
        if got == 0 {
            return Err(execute_error(
                command,
                ExchangeError::Closed {
                    received: have,
                    expected,
                },
            ));
        }
        Ok(())
    }

    /// The response, if its result is success.
    fn checked(&mut self, command: Command, body: &[u8]) -> Result<Vec<u8>, IoctlError> {
        let response = self.exchange(command, body)?;
        match word(&response, 0) {
            result::TPM_SUCCESS => Ok(response),
            rc => Err(IoctlError::TpmResult { command, rc }),
        }
    }

    /// A command whose success prints nothing: its output is empty.
    fn quiet(&mut self, command: Command, body: &[u8]) -> Result<String, IoctlError> {
        self.checked(command, body).map(|_| String::new())
    }
}

fn execute_error(command: Command, source: ExchangeError) -> IoctlError {
    IoctlError::Execute { command, source }
}

/// HASH_START, the data in chunks, HASH_END. Data from stdin is sent as it fills chunks,
/// and its last chunk is sent even when empty (as swtpm_ioctl); an empty argument sends
/// no HASH_DATA at all.
fn hash(control: &mut Control, input: &HashInput, stdin: &mut dyn Read) -> Result<(), IoctlError> {
    control.checked(Command::HashStart, &[])?;
    match input {
        HashInput::Data(data) => {
            for chunk in data.chunks(HASH_CHUNK) {
                hash_data(control, chunk)?;
            }
        }
        HashInput::Stdin => loop {
            let chunk = read_chunk(stdin)?;
            hash_data(control, &chunk)?;
            if chunk.len() < HASH_CHUNK {
                break;
            }
        },
    }
    control.checked(Command::HashEnd, &[])?;
    Ok(())
}

fn hash_data(control: &mut Control, chunk: &[u8]) -> Result<(), IoctlError> {
    let mut body = words([chunk.len() as u32]);
    body.extend_from_slice(chunk);
    control.checked(Command::HashData, &body).map(drop)
}

/// Reads until a chunk is full or stdin ends.
fn read_chunk(stdin: &mut dyn Read) -> Result<Vec<u8>, IoctlError> {
    let mut chunk = Vec::with_capacity(HASH_CHUNK);
    stdin
        .take(HASH_CHUNK as u64)
        .read_to_end(&mut chunk)
        .map_err(IoctlError::Stdin)?;
    Ok(chunk)
}

/// GET_INFO, asking again from the next offset until the whole text arrived (swtpm sends
/// at most 3 KiB per answer); prints the text up to its terminating NUL.
fn info(control: &mut Control, flags: u64) -> Result<String, IoctlError> {
    let mut text = Vec::new();
    loop {
        let offset = u32::try_from(text.len()).unwrap_or(u32::MAX);
        let body = words([(flags >> 32) as u32, flags as u32, offset, 0]);
        let response = control.checked(Command::GetInfo, &body)?;
        let total = word(&response, 4) as usize;
        let chunk = response.get(12..).unwrap_or_default();
        text.extend_from_slice(chunk);
        // `totlength` counts the terminating NUL, and swtpm refuses an offset that points
        // at it: stop once only the NUL is missing.
        if text.len() + 1 >= total || chunk.is_empty() {
            break;
        }
    }
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    Ok(format!("{}\n", String::from_utf8_lossy(&text[..end])))
}

/// GET_STATEBLOB of the decrypted blob into `path` (created with mode 0600 before the
/// request, so a failed request leaves it empty, as swtpm_ioctl does). A blob that does
/// not exist (a result with the non-fatal bit) is an empty file.
fn save(control: &mut Control, blob_type: u32, path: &Path) -> Result<(), IoctlError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| IoctlError::OpenFile {
            path: path.to_owned(),
            purpose: "writing",
            source,
        })?;
    let command = Command::GetStateBlob;
    let mut response = control.exchange(command, &words([STATE_FLAG_DECRYPTED, blob_type, 0]))?;
    let rc = word(&response, 0);
    if rc != result::TPM_SUCCESS && rc & result::TPM_RETRY == 0 {
        return Err(IoctlError::TpmResult { command, rc });
    }
    // On a socket the whole blob comes with the header (totlength == length); should a
    // peer announce more in `totlength`, the rest follows on the stream.
    let total = 16 + word(&response, 8) as usize;
    if total > MAX_RESPONSE {
        return Err(execute_error(command, ExchangeError::TooLong(total)));
    }
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    while response.len() < total {
        control.read_more(command, &mut response, total, deadline)?;
    }
    file.write_all(response.get(16..).unwrap_or_default())
        .map_err(|source| IoctlError::WriteFile {
            path: path.to_owned(),
            source,
        })
}

/// SET_STATEBLOB from `path`: the header (with the file's size) in one write, the blob in
/// the next, as swtpm_ioctl sends it; the TPM must be stopped.
fn load(control: &mut Control, blob_type: u32, path: &Path) -> Result<(), IoctlError> {
    let read_error = |source| IoctlError::ReadFile {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|source| IoctlError::OpenFile {
        path: path.to_owned(),
        purpose: "reading",
        source,
    })?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > MAX_BLOB_FILE {
        return Err(IoctlError::BlobTooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let mut blob = Vec::with_capacity(size as usize);
    file.take(MAX_BLOB_FILE + 1)
        .read_to_end(&mut blob)
        .map_err(read_error)?;
    let length = u32::try_from(blob.len()).map_err(|_| IoctlError::BlobTooLarge {
        path: path.to_owned(),
        size: blob.len() as u64,
    })?;
    let command = Command::SetStateBlob;
    control.send(
        command,
        &protocol::encode_request(command, &words([0, blob_type, length])),
    )?;
    if !blob.is_empty() {
        control.send(command, &blob)?;
    }
    let response = control.receive(command)?;
    match word(&response, 0) {
        result::TPM_SUCCESS => Ok(()),
        rc => Err(IoctlError::TpmResult { command, rc }),
    }
}
