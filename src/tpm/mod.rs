//! TPM wire facts vtpm needs itself: packet headers, a few response codes, and the
//! handful of commands the daemon sends on its own (Startup, Shutdown).

pub mod wire;

use std::fmt;

/// Which TPM the daemon emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpmVersion {
    V1_2,
    V2,
}

impl TpmVersion {
    /// Prefix of swtpm's state file names (`tpm2-00.permall`, `tpm-00.permall`).
    pub fn file_prefix(self) -> &'static str {
        match self {
            TpmVersion::V1_2 => "tpm-00.",
            TpmVersion::V2 => "tpm2-00.",
        }
    }
}

impl fmt::Display for TpmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TpmVersion::V1_2 => "1.2",
            TpmVersion::V2 => "2.0",
        })
    }
}

pub const HEADER_LEN: usize = 10;

pub const TPM2_ST_NO_SESSIONS: u16 = 0x8001;
pub const TPM2_ST_SESSIONS: u16 = 0x8002;
pub const TPM_TAG_RQU_COMMAND: u16 = 0x00C1;
pub const TPM_TAG_RSP_COMMAND: u16 = 0x00C4;

pub const TPM2_CC_STARTUP: u32 = 0x144;
pub const TPM2_CC_SHUTDOWN: u32 = 0x145;
pub const TPM_ORD_STARTUP: u32 = 0x99;
/// The vendor command of the Linux vTPM proxy that switches locality (TPM 1.2 and 2).
pub const TPM_CC_SET_LOCALITY: u32 = 0x2000_1000;
/// TPM 1.2's TSC_ResetEstablishmentBit (locality 3 or 4): clears the established flag.
pub const TSC_ORD_RESET_ESTABLISHMENT_BIT: u32 = 0x4000_000B;

pub const TPM2_SU_CLEAR: u16 = 0;
pub const TPM2_SU_STATE: u16 = 1;

pub const TPM2_RC_INSUFFICIENT: u32 = 0x09A;
pub const TPM2_RC_INITIALIZE: u32 = 0x100;
pub const TPM2_RC_FAILURE: u32 = 0x101;
pub const TPM2_RC_LOCALITY: u32 = 0x107;
/// "The command may require writing of NV and NV is not currently accessible."
pub const TPM2_RC_NV_UNAVAILABLE: u32 = 0x923;
pub const TPM_BAD_PARAM_SIZE: u32 = 0x19;
pub const TPM_BAD_LOCALITY: u32 = 0x3D;

/// The 10-byte header shared by TPM 1.2 and TPM 2 commands and responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u16,
    pub size: u32,
    /// Ordinal or command code in a command, response code in a response.
    pub code: u32,
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            tag: u16::from_be_bytes([bytes[0], bytes[1]]),
            size: u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
            code: u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
        })
    }
}

/// A header-only response carrying `rc`, tagged for `version`.
pub fn error_response(version: TpmVersion, rc: u32) -> [u8; HEADER_LEN] {
    let tag = match version {
        TpmVersion::V1_2 => TPM_TAG_RSP_COMMAND,
        TpmVersion::V2 => TPM2_ST_NO_SESSIONS,
    };
    let mut out = [0u8; HEADER_LEN];
    out[..2].copy_from_slice(&tag.to_be_bytes());
    out[2..6].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
    out[6..].copy_from_slice(&rc.to_be_bytes());
    out
}

/// The answer to every data-channel command while the TPM is not running; QEMU tells
/// TPM 1.2 from TPM 2 by its tag.
pub fn not_running_response(version: TpmVersion) -> [u8; HEADER_LEN] {
    match version {
        TpmVersion::V1_2 => error_response(version, 0x09),
        TpmVersion::V2 => error_response(version, TPM2_RC_FAILURE),
    }
}

/// The response code of a response, if it is long enough to have one.
pub fn response_code(response: &[u8]) -> Option<u32> {
    Header::parse(response).map(|header| header.code)
}

/// How the daemon starts the TPM on behalf of the client (`--flags startup-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupType {
    Clear,
    State,
    Deactivated,
}

/// TPM_Startup / TPM2_Startup of the given type; `None` where TPM 2 has no such type.
pub fn startup_command(version: TpmVersion, kind: StartupType) -> Option<Vec<u8>> {
    let (tag, code, param): (u16, u32, u16) = match (version, kind) {
        (TpmVersion::V2, StartupType::Clear) => {
            (TPM2_ST_NO_SESSIONS, TPM2_CC_STARTUP, TPM2_SU_CLEAR)
        }
        (TpmVersion::V2, StartupType::State) => {
            (TPM2_ST_NO_SESSIONS, TPM2_CC_STARTUP, TPM2_SU_STATE)
        }
        (TpmVersion::V2, StartupType::Deactivated) => return None,
        (TpmVersion::V1_2, StartupType::Clear) => (TPM_TAG_RQU_COMMAND, TPM_ORD_STARTUP, 1),
        (TpmVersion::V1_2, StartupType::State) => (TPM_TAG_RQU_COMMAND, TPM_ORD_STARTUP, 2),
        (TpmVersion::V1_2, StartupType::Deactivated) => (TPM_TAG_RQU_COMMAND, TPM_ORD_STARTUP, 3),
    };
    Some(wire::command(tag, code, &param.to_be_bytes()))
}

/// TPM2_Shutdown with `shutdown_type` (`TPM2_SU_STATE` or `TPM2_SU_CLEAR`).
pub fn tpm2_shutdown_command(shutdown_type: u16) -> Vec<u8> {
    wire::command(
        TPM2_ST_NO_SESSIONS,
        TPM2_CC_SHUTDOWN,
        &shutdown_type.to_be_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_running_responses_match_swtpm() {
        assert_eq!(
            not_running_response(TpmVersion::V2),
            [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 1]
        );
        assert_eq!(
            not_running_response(TpmVersion::V1_2),
            [0, 0xc4, 0, 0, 0, 10, 0, 0, 0, 9]
        );
    }

    #[test]
    fn shutdown_state_bytes() {
        assert_eq!(
            tpm2_shutdown_command(TPM2_SU_STATE),
            [0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x45, 0, 1]
        );
    }

    #[test]
    fn header_parse_needs_ten_bytes() {
        assert_eq!(Header::parse(&[0x80, 1, 0, 0, 0, 12, 0, 0, 1]), None);
        let header = Header::parse(&[0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0]).unwrap();
        assert_eq!(
            header,
            Header {
                tag: 0x8001,
                size: 12,
                code: 0x144
            }
        );
    }

    #[test]
    fn startup_deactivated_is_tpm12_only() {
        assert!(startup_command(TpmVersion::V2, StartupType::Deactivated).is_none());
        assert_eq!(
            startup_command(TpmVersion::V1_2, StartupType::Clear).unwrap(),
            [0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99, 0, 1]
        );
    }
}
