//! The TPM commands swtpm_bios sends, byte for byte (TPM 1.2 main spec part 3, TPM 2.0
//! library spec part 3), and the one response it looks into. Pure.

use crate::tpm::wire::command;
use crate::tpm::{
    self, HEADER_LEN, Header, StartupType, TPM_TAG_RQU_COMMAND, TPM2_ST_NO_SESSIONS,
    TPM2_ST_SESSIONS, TpmVersion,
};

const TPM_ORD_CONTINUE_SELF_TEST: u32 = 0x53;
const TPM_ORD_GET_CAPABILITY: u32 = 0x65;
const TPM_ORD_PHYSICAL_ENABLE: u32 = 0x6F;
const TPM_ORD_PHYSICAL_SET_DEACTIVATED: u32 = 0x72;
const TSC_ORD_PHYSICAL_PRESENCE: u32 = 0x4000_000A;

/// TSC_PhysicalPresence flags.
pub const PP_LOCK: u16 = 0x0004;
pub const PP_PRESENT: u16 = 0x0008;
pub const PP_NOTPRESENT: u16 = 0x0010;
pub const PP_CMD_ENABLE: u16 = 0x0020;

const TPM_CAP_FLAG: u32 = 4;
const TPM_CAP_FLAG_PERMANENT: u32 = 0x108;

const TPM2_CC_HIERARCHY_CHANGE_AUTH: u32 = 0x129;
const TPM2_CC_INCREMENTAL_SELF_TEST: u32 = 0x142;
const TPM2_RH_PLATFORM: u32 = 0x4000_000C;
const TPM2_RS_PW: u32 = 0x4000_0009;
const TPM2_ALG_SHA256: u16 = 0x000B;

/// The size of the platform hierarchy's new authValue (a SHA-256 digest's size).
pub const PLATFORM_AUTH_LEN: usize = 32;

/// TPM_Startup / TPM2_Startup; `None` for TPM 2 and DEACTIVATED, which it lacks.
pub fn startup(version: TpmVersion, kind: StartupType) -> Option<Vec<u8>> {
    tpm::startup_command(version, kind)
}

pub fn tsc_physical_presence(flags: u16) -> Vec<u8> {
    command(
        TPM_TAG_RQU_COMMAND,
        TSC_ORD_PHYSICAL_PRESENCE,
        &flags.to_be_bytes(),
    )
}

pub fn tpm_physical_enable() -> Vec<u8> {
    command(TPM_TAG_RQU_COMMAND, TPM_ORD_PHYSICAL_ENABLE, &[])
}

pub fn tpm_physical_set_deactivated(deactivated: bool) -> Vec<u8> {
    command(
        TPM_TAG_RQU_COMMAND,
        TPM_ORD_PHYSICAL_SET_DEACTIVATED,
        &[u8::from(deactivated)],
    )
}

pub fn tpm_continue_self_test() -> Vec<u8> {
    command(TPM_TAG_RQU_COMMAND, TPM_ORD_CONTINUE_SELF_TEST, &[])
}

/// TPM_GetCapability(TPM_CAP_FLAG, TPM_CAP_FLAG_PERMANENT).
pub fn tpm_get_permanent_flags() -> Vec<u8> {
    let mut parameters = Vec::with_capacity(12);
    parameters.extend_from_slice(&TPM_CAP_FLAG.to_be_bytes());
    parameters.extend_from_slice(&4u32.to_be_bytes());
    parameters.extend_from_slice(&TPM_CAP_FLAG_PERMANENT.to_be_bytes());
    command(TPM_TAG_RQU_COMMAND, TPM_ORD_GET_CAPABILITY, &parameters)
}

/// The `deactivated` flag from a successful answer to [`tpm_get_permanent_flags`]:
/// header, u32 size, then TPM_PERMANENT_FLAGS (u16 tag, disable, ownership,
/// deactivated, ...). `None` if the answer is too short to hold it.
pub fn permanent_flags_deactivated(response: &[u8]) -> Option<bool> {
    const DEACTIVATED_AT: usize = HEADER_LEN + 4 + 2 + 2;
    let header = Header::parse(response)?;
    if (header.size as usize) < DEACTIVATED_AT + 1 {
        return None;
    }
    response.get(DEACTIVATED_AT).map(|&flag| flag != 0)
}

/// TPM2_IncrementalSelfTest of SHA-256 (swtpm_bios 0.10.2; 0.7.1 tested SHA-1).
pub fn tpm2_incremental_self_test() -> Vec<u8> {
    let mut parameters = Vec::with_capacity(6);
    parameters.extend_from_slice(&1u32.to_be_bytes());
    parameters.extend_from_slice(&TPM2_ALG_SHA256.to_be_bytes());
    command(
        TPM2_ST_NO_SESSIONS,
        TPM2_CC_INCREMENTAL_SELF_TEST,
        &parameters,
    )
}

/// TPM2_HierarchyChangeAuth(TPM_RH_PLATFORM, new_auth), authorised with the (empty)
/// platform password in a TPM_RS_PW session.
pub fn tpm2_platform_change_auth(new_auth: &[u8; PLATFORM_AUTH_LEN]) -> Vec<u8> {
    // TPMS_AUTH_COMMAND: handle, empty nonce, attributes 0, empty hmac.
    let mut session = Vec::with_capacity(9);
    session.extend_from_slice(&TPM2_RS_PW.to_be_bytes());
    session.extend_from_slice(&0u16.to_be_bytes());
    session.push(0);
    session.extend_from_slice(&0u16.to_be_bytes());
    let mut parameters = Vec::new();
    parameters.extend_from_slice(&TPM2_RH_PLATFORM.to_be_bytes());
    parameters.extend_from_slice(&(session.len() as u32).to_be_bytes());
    parameters.extend_from_slice(&session);
    parameters.extend_from_slice(&(PLATFORM_AUTH_LEN as u16).to_be_bytes());
    parameters.extend_from_slice(new_auth);
    command(TPM2_ST_SESSIONS, TPM2_CC_HIERARCHY_CHANGE_AUTH, &parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn tpm12_commands_as_swtpm_bios_sends_them() {
        assert_eq!(
            hex(&startup(TpmVersion::V1_2, StartupType::Deactivated).unwrap()),
            "00c10000000c000000990003"
        );
        assert_eq!(
            hex(&tsc_physical_presence(PP_CMD_ENABLE)),
            "00c10000000c4000000a0020"
        );
        assert_eq!(
            hex(&tsc_physical_presence(PP_PRESENT)),
            "00c10000000c4000000a0008"
        );
        assert_eq!(
            hex(&tsc_physical_presence(PP_NOTPRESENT | PP_LOCK)),
            "00c10000000c4000000a0014"
        );
        assert_eq!(hex(&tpm_physical_enable()), "00c10000000a0000006f");
        assert_eq!(
            hex(&tpm_physical_set_deactivated(false)),
            "00c10000000b0000007200"
        );
        assert_eq!(hex(&tpm_continue_self_test()), "00c10000000a00000053");
        assert_eq!(
            hex(&tpm_get_permanent_flags()),
            "00c10000001600000065000000040000000400000108"
        );
    }

    #[test]
    fn tpm2_commands() {
        assert_eq!(
            hex(&startup(TpmVersion::V2, StartupType::State).unwrap()),
            "80010000000c000001440001"
        );
        assert!(startup(TpmVersion::V2, StartupType::Deactivated).is_none());
        assert_eq!(
            hex(&tpm2_incremental_self_test()),
            "80010000001000000142000000010 00b".replace(' ', "")
        );
        let auth = [0xAB; PLATFORM_AUTH_LEN];
        let bytes = tpm2_platform_change_auth(&auth);
        assert_eq!(bytes.len(), 61);
        assert_eq!(
            hex(&bytes[..29]),
            "80020000003d000001294000000c00000009400000090000000000 0020".replace(' ', "")
        );
        assert_eq!(&bytes[29..], &auth);
    }

    #[test]
    fn deactivated_flag() {
        // Observed from swtpm 0.7.1 (libtpms 0.9.2): a deactivated TPM 1.2.
        let deactivated = [
            0x00, 0xc4, 0, 0, 0, 0x24, 0, 0, 0, 0, 0, 0, 0, 0x16, 0x00, 0x1f, 0, 1, 1, 1, 0, 1, 0,
            0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0,
        ];
        assert_eq!(permanent_flags_deactivated(&deactivated), Some(true));
        let mut active = deactivated;
        active[18] = 0;
        assert_eq!(permanent_flags_deactivated(&active), Some(false));
        assert_eq!(permanent_flags_deactivated(&deactivated[..18]), None);
        assert_eq!(
            permanent_flags_deactivated(&[0, 0xc4, 0, 0, 0, 10, 0, 0, 0, 0]),
            None
        );
        // A header that claims more than there is.
        for len in 0..deactivated.len() {
            let _ = permanent_flags_deactivated(&deactivated[..len]);
        }
    }
}
