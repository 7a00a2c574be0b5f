//! The control-channel protocol of swtpm on sockets (ctrl-protocol.md): command codes,
//! result codes, request decoding and response encoding. Pure: bytes in, bytes out.
//!
//! A request is a big-endian u32 command code followed by a body; a response is the
//! body only. Every error response is exactly the 4-byte result code.

/// Result codes (`ptm_res`, TPM 1.2 numbering) used on the control channel.
pub mod result {
    pub const TPM_SUCCESS: u32 = 0x00;
    pub const TPM_BAD_PARAMETER: u32 = 0x03;
    pub const TPM_FAIL: u32 = 0x09;
    pub const TPM_BAD_ORDINAL: u32 = 0x0A;
    pub const TPM_KEYNOTFOUND: u32 = 0x0D;
    pub const TPM_SIZE: u32 = 0x17;
    pub const TPM_IOERROR: u32 = 0x1F;
    pub const TPM_ENCRYPT_ERROR: u32 = 0x20;
    pub const TPM_DECRYPT_ERROR: u32 = 0x21;
    pub const TPM_BAD_KEY_PROPERTY: u32 = 0x28;
    pub const TPM_BAD_DATASIZE: u32 = 0x2B;
    pub const TPM_BAD_VERSION: u32 = 0x2E;
    pub const TPM_BAD_LOCALITY: u32 = 0x3D;
    /// Non-fatal: "no such blob". QEMU accepts any result with this bit.
    pub const TPM_RETRY: u32 = 0x800;
}

/// Control command codes (`CMD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Command {
    GetCapability = 0x01,
    Init = 0x02,
    Shutdown = 0x03,
    GetTpmEstablished = 0x04,
    SetLocality = 0x05,
    HashStart = 0x06,
    HashData = 0x07,
    HashEnd = 0x08,
    CancelTpmCmd = 0x09,
    StoreVolatile = 0x0A,
    ResetTpmEstablished = 0x0B,
    GetStateBlob = 0x0C,
    SetStateBlob = 0x0D,
    Stop = 0x0E,
    GetConfig = 0x0F,
    SetDatafd = 0x10,
    SetBufferSize = 0x11,
    GetInfo = 0x12,
    LockStorage = 0x13,
}

impl Command {
    pub fn from_code(code: u32) -> Option<Command> {
        use Command::*;
        const ALL: [Command; 19] = [
            GetCapability,
            Init,
            Shutdown,
            GetTpmEstablished,
            SetLocality,
            HashStart,
            HashData,
            HashEnd,
            CancelTpmCmd,
            StoreVolatile,
            ResetTpmEstablished,
            GetStateBlob,
            SetStateBlob,
            Stop,
            GetConfig,
            SetDatafd,
            SetBufferSize,
            GetInfo,
            LockStorage,
        ];
        ALL.into_iter().find(|cmd| *cmd as u32 == code)
    }

    /// Commands refused with TPM_BAD_ORDINAL while the TPM is not running; swtpm checks
    /// this before it looks at the body.
    pub fn needs_running_tpm(self) -> bool {
        matches!(
            self,
            Command::GetTpmEstablished
                | Command::ResetTpmEstablished
                | Command::HashStart
                | Command::HashData
                | Command::HashEnd
                | Command::CancelTpmCmd
                | Command::StoreVolatile
                | Command::GetStateBlob
        )
    }
}

/// Capability bits of CMD_GET_CAPABILITY.
pub mod caps {
    pub const INIT: u32 = 1 << 0;
    pub const SHUTDOWN: u32 = 1 << 1;
    pub const GET_TPMESTABLISHED: u32 = 1 << 2;
    pub const SET_LOCALITY: u32 = 1 << 3;
    pub const HASHING: u32 = 1 << 4;
    pub const CANCEL_TPM_CMD: u32 = 1 << 5;
    pub const STORE_VOLATILE: u32 = 1 << 6;
    pub const RESET_TPMESTABLISHED: u32 = 1 << 7;
    pub const GET_STATEBLOB: u32 = 1 << 8;
    pub const SET_STATEBLOB: u32 = 1 << 9;
    pub const STOP: u32 = 1 << 10;
    pub const GET_CONFIG: u32 = 1 << 11;
    pub const SET_DATAFD: u32 = 1 << 12;
    pub const SET_BUFFERSIZE: u32 = 1 << 13;
    pub const GET_INFO: u32 = 1 << 14;
    pub const SEND_COMMAND_HEADER: u32 = 1 << 15;
    pub const LOCK_STORAGE: u32 = 1 << 16;
}

/// INIT flag: delete the stored volatile state once libtpms has read it.
pub const INIT_FLAG_DELETE_VOLATILE: u32 = 0x1;
/// GET_STATEBLOB request flag: remove the state-key encryption.
pub const STATE_FLAG_DECRYPTED: u32 = 0x1;
/// GET_STATEBLOB response / SET_STATEBLOB request flag: state-key encrypted.
pub const STATE_FLAG_ENCRYPTED: u32 = 0x2;
/// GET_CONFIG flags.
pub const CONFIG_FLAG_FILE_KEY: u32 = 0x1;
pub const CONFIG_FLAG_MIGRATION_KEY: u32 = 0x2;

/// Blob types of GET/SET_STATEBLOB.
pub const BLOB_TYPE_PERMANENT: u32 = 1;
pub const BLOB_TYPE_VOLATILE: u32 = 2;
pub const BLOB_TYPE_SAVESTATE: u32 = 3;

/// Size of the buffer swtpm reads a request into: the code plus a 4100-byte body.
pub const REQUEST_BUFFER: usize = 4104;
/// GET_INFO sends at most this many bytes of text per response.
pub const INFO_CHUNK: usize = 3072;

/// A decoded control request. Bodies of HASH_DATA and SET_STATEBLOB may continue past
/// the first buffer; `first` holds what arrived with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    GetCapability,
    Init {
        flags: u32,
    },
    Shutdown,
    GetTpmEstablished,
    SetLocality {
        locality: u8,
    },
    HashStart,
    HashData {
        length: u32,
        first: &'a [u8],
    },
    HashEnd,
    CancelTpmCmd,
    StoreVolatile,
    ResetTpmEstablished {
        locality: u8,
    },
    GetStateBlob {
        flags: u32,
        blob_type: u32,
        offset: u32,
    },
    SetStateBlob {
        flags: u32,
        blob_type: u32,
        length: u32,
        first: &'a [u8],
    },
    Stop,
    GetConfig,
    SetDatafd,
    SetBufferSize {
        size: u32,
    },
    GetInfo {
        flags: u64,
        offset: u32,
    },
    LockStorage {
        retries: u32,
    },
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// How many bytes of a request swtpm waits for before handling it, given the bytes
/// received so far (at least the code). Only a few commands wait for their body;
/// everything else is handled with whatever arrived together with the code.
pub fn wanted_len(received: &[u8]) -> usize {
    let Some(code) = be32(received, 0) else {
        return 4;
    };
    let with_announced = |fixed: usize, len_at: usize| match be32(received, len_at) {
        Some(len) => (fixed as u64 + u64::from(len)).min(REQUEST_BUFFER as u64) as usize,
        None => fixed,
    };
    match Command::from_code(code) {
        Some(Command::Init) => 8,
        Some(Command::SetLocality | Command::ResetTpmEstablished) => 5,
        Some(Command::GetStateBlob) => 16,
        Some(Command::HashData) => with_announced(8, 4),
        Some(Command::SetStateBlob) => with_announced(16, 12),
        _ => 4,
    }
}

/// Decodes the body of a request, checking its size as swtpm does.
/// Unknown codes give TPM_BAD_ORDINAL, bad sizes TPM_BAD_PARAMETER.
pub fn decode(cmd: Command, body: &[u8]) -> Result<Request<'_>, u32> {
    use result::TPM_BAD_PARAMETER as BAD;
    let exactly_empty = |req: Request<'static>| if body.is_empty() { Ok(req) } else { Err(BAD) };
    let at_least = |n: usize| if body.len() >= n { Ok(()) } else { Err(BAD) };
    let word = |at: usize| be32(body, at).ok_or(BAD);
    match cmd {
        Command::GetCapability => Ok(Request::GetCapability),
        Command::SetDatafd => Ok(Request::SetDatafd),
        Command::Init => {
            if body.len() != 4 {
                return Err(BAD);
            }
            Ok(Request::Init { flags: word(0)? })
        }
        Command::Shutdown => exactly_empty(Request::Shutdown),
        Command::GetTpmEstablished => exactly_empty(Request::GetTpmEstablished),
        Command::HashStart => exactly_empty(Request::HashStart),
        Command::HashEnd => exactly_empty(Request::HashEnd),
        Command::CancelTpmCmd => exactly_empty(Request::CancelTpmCmd),
        Command::StoreVolatile => exactly_empty(Request::StoreVolatile),
        Command::Stop => exactly_empty(Request::Stop),
        Command::GetConfig => exactly_empty(Request::GetConfig),
        Command::SetLocality => {
            at_least(1)?;
            Ok(Request::SetLocality { locality: body[0] })
        }
        Command::ResetTpmEstablished => {
            at_least(1)?;
            Ok(Request::ResetTpmEstablished { locality: body[0] })
        }
        Command::HashData => {
            let length = word(0)?;
            let first = &body[4..];
            // swtpm before 0.11 keeps reading after an over-long body and hangs both
            // channels; refusing it is what swtpm's development branch does.
            if first.len() as u64 > u64::from(length) {
                return Err(BAD);
            }
            Ok(Request::HashData { length, first })
        }
        Command::GetStateBlob => {
            at_least(12)?;
            Ok(Request::GetStateBlob {
                flags: word(0)?,
                blob_type: word(4)?,
                offset: word(8)?,
            })
        }
        Command::SetStateBlob => {
            at_least(12)?;
            let length = word(8)?;
            let first = &body[12..];
            if first.len() as u64 > u64::from(length) {
                return Err(BAD);
            }
            Ok(Request::SetStateBlob {
                flags: word(0)?,
                blob_type: word(4)?,
                length,
                first,
            })
        }
        Command::SetBufferSize => Ok(Request::SetBufferSize { size: word(0)? }),
        Command::GetInfo => {
            at_least(16)?;
            let flags = u64::from(word(0)?) << 32 | u64::from(word(4)?);
            Ok(Request::GetInfo {
                flags,
                offset: word(8)?,
            })
        }
        Command::LockStorage => Ok(Request::LockStorage { retries: word(0)? }),
    }
}

/// Encodes a request the way QEMU and swtpm_ioctl send it (code, then body).
pub fn encode_request(cmd: Command, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(cmd as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// How long the response to `cmd` is, judging by the bytes of it received so far (a
/// client reads until it has this many): 4 until the result code is known, then the
/// length of that response (ctrl-protocol.md §9). Errors are the bare 4-byte result,
/// except GET_STATEBLOB, which keeps its 16-byte header unless the TPM was not running.
pub fn response_len(cmd: Command, received: &[u8]) -> usize {
    let Some(rc) = be32(received, 0) else {
        return 4;
    };
    let with_announced = |fixed: usize, len_at: usize| match be32(received, len_at) {
        Some(len) => fixed.saturating_add(len as usize),
        None => fixed,
    };
    match cmd {
        Command::GetStateBlob if rc != result::TPM_BAD_ORDINAL => with_announced(16, 12),
        _ if rc != result::TPM_SUCCESS => 4,
        Command::GetCapability | Command::GetTpmEstablished | Command::GetConfig => 8,
        Command::SetBufferSize => 16,
        Command::GetInfo => with_announced(12, 8),
        _ => 4,
    }
}

/// Big-endian u32 words, concatenated: most responses are made of them.
pub fn words<const N: usize>(values: [u32; N]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// The 16-byte GET_STATEBLOB header followed by the blob.
pub fn stateblob_response(rc: u32, flags: u32, data: &[u8]) -> Vec<u8> {
    let len = data.len() as u32;
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&words([rc, flags, len, len]));
    out.extend_from_slice(data);
    out
}

/// The GET_INFO response for `text` (which includes its terminating NUL) from `offset`.
pub fn info_response(text_with_nul: &[u8], offset: u32) -> Vec<u8> {
    let total = text_with_nul.len();
    let offset = offset as usize;
    // swtpm refuses offsets at or past the NUL.
    if offset + 1 >= total {
        return words([result::TPM_BAD_PARAMETER]);
    }
    let chunk = &text_with_nul[offset..total.min(offset + INFO_CHUNK)];
    let mut out = words([result::TPM_SUCCESS, total as u32, chunk.len() as u32]);
    out.extend_from_slice(chunk);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn every_code_round_trips() {
        for code in 1..=0x13 {
            assert_eq!(Command::from_code(code).map(|c| c as u32), Some(code));
        }
        assert_eq!(Command::from_code(0), None);
        assert_eq!(Command::from_code(0x14), None);
    }

    #[test]
    fn exact_size_commands_refuse_extra_bytes() {
        assert_eq!(decode(Command::Stop, &[]), Ok(Request::Stop));
        assert_eq!(decode(Command::Stop, &[0]), Err(result::TPM_BAD_PARAMETER));
        assert_eq!(
            decode(Command::GetConfig, &[0]),
            Err(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            decode(Command::Init, &[0, 0, 0, 1]),
            Ok(Request::Init { flags: 1 })
        );
        assert_eq!(
            decode(Command::Init, &[0; 8]),
            Err(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            decode(Command::Init, &[0; 3]),
            Err(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            decode(Command::GetCapability, &[1, 2, 3]),
            Ok(Request::GetCapability)
        );
    }

    #[test]
    fn minimum_size_commands() {
        assert_eq!(
            decode(Command::SetLocality, &[3, 0, 0, 0]),
            Ok(Request::SetLocality { locality: 3 })
        );
        assert_eq!(
            decode(Command::SetLocality, &[]),
            Err(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            decode(Command::SetBufferSize, &[0; 3]),
            Err(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            decode(Command::GetInfo, &[0; 15]),
            Err(result::TPM_BAD_PARAMETER)
        );
        let mut info = vec![0; 16];
        info[7] = 3;
        info[11] = 10;
        assert_eq!(
            decode(Command::GetInfo, &info),
            Ok(Request::GetInfo {
                flags: 3,
                offset: 10
            })
        );
        assert_eq!(
            decode(Command::LockStorage, &[0, 0, 1, 44]),
            Ok(Request::LockStorage { retries: 300 })
        );
    }

    #[test]
    fn hash_data_refuses_more_bytes_than_announced() {
        assert_eq!(
            decode(Command::HashData, &[0, 0, 0, 2, 1, 2]),
            Ok(Request::HashData {
                length: 2,
                first: &[1, 2]
            })
        );
        assert_eq!(
            decode(Command::HashData, &[0, 0, 0, 2, 1, 2, 3]),
            Err(result::TPM_BAD_PARAMETER)
        );
    }

    #[test]
    fn set_stateblob_refuses_more_bytes_than_announced() {
        let body = [
            0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        assert_eq!(
            decode(Command::SetStateBlob, &body),
            Err(result::TPM_BAD_PARAMETER)
        );
    }

    #[test]
    fn wanted_lengths() {
        assert_eq!(wanted_len(&[0, 0]), 4);
        assert_eq!(wanted_len(&req(2, &[])), 8);
        assert_eq!(wanted_len(&req(5, &[])), 5);
        assert_eq!(wanted_len(&req(0x0E, &[])), 4);
        assert_eq!(wanted_len(&req(0x11, &[])), 4);
        assert_eq!(wanted_len(&req(0x07, &[0, 0, 0, 3])), 11);
        assert_eq!(wanted_len(&req(0x0D, &[0; 8])), 16);
        assert_eq!(
            wanted_len(&req(0x0D, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0])),
            REQUEST_BUFFER
        );
        assert_eq!(
            wanted_len(&req(
                0x0D,
                &[0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]
            )),
            REQUEST_BUFFER
        );
    }

    #[test]
    fn info_offsets() {
        let text = b"{}\0";
        assert_eq!(
            info_response(text, 0),
            [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, b'{', b'}', 0]
        );
        assert_eq!(info_response(text, 2), [0, 0, 0, 3]);
        assert_eq!(info_response(text, 3), [0, 0, 0, 3]);
        assert_eq!(info_response(text, u32::MAX), [0, 0, 0, 3]);
    }

    #[test]
    fn response_lengths_for_clients() {
        use Command::*;
        assert_eq!(response_len(GetCapability, &[]), 4);
        assert_eq!(response_len(GetCapability, &[0, 0, 0, 0]), 8);
        assert_eq!(response_len(GetTpmEstablished, &[0, 0, 0, 0x0a]), 4);
        assert_eq!(response_len(SetBufferSize, &words([0])), 16);
        assert_eq!(response_len(SetBufferSize, &words([0x0a])), 4);
        assert_eq!(response_len(Init, &words([0])), 4);
        assert_eq!(response_len(GetInfo, &words([0])), 12);
        assert_eq!(response_len(GetInfo, &words([0, 0x96, 0x96])), 12 + 0x96);
        assert_eq!(response_len(GetInfo, &words([3])), 4);
        assert_eq!(response_len(GetStateBlob, &words([0x0a])), 4);
        assert_eq!(response_len(GetStateBlob, &words([0])), 16);
        assert_eq!(response_len(GetStateBlob, &words([0x800, 0, 0, 0])), 16);
        assert_eq!(
            response_len(GetStateBlob, &words([0, 0, 0x529, 0x529])),
            16 + 0x529
        );
        assert_eq!(
            response_len(GetStateBlob, &words([0, 0, 0, u32::MAX])),
            16 + u32::MAX as usize
        );
    }

    #[test]
    fn decode_never_panics_on_any_body() {
        for code in 0..=0x14u32 {
            let Some(cmd) = Command::from_code(code) else {
                continue;
            };
            for len in 0..40 {
                let body: Vec<u8> = (0..len).map(|i| (i * 37 + code as usize) as u8).collect();
                let _ = decode(cmd, &body);
                let _ = wanted_len(&req(code, &body));
                let _ = response_len(cmd, &body);
            }
        }
    }
}
