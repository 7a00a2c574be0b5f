//! The TPM 1.2 commands swtpm_setup sends (manufacturing.md §1.8): enabling and
//! activating the TPM, creating the EK, taking ownership over an OIAP session, and the
//! NV spaces for the certificates. Pure: the caller supplies nonces and encrypted
//! secrets; parsers return `None` on malformed responses.

use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};

use crate::tpm::wire::{Reader, command};

const TAG_RQU_COMMAND: u16 = 0x00C1;
const TAG_RQU_AUTH1_COMMAND: u16 = 0x00C2;

const ORD_OIAP: u32 = 0x0A;
const ORD_TAKE_OWNERSHIP: u32 = 0x0D;
const ORD_PHYSICAL_ENABLE: u32 = 0x6F;
const ORD_PHYSICAL_SET_DEACTIVATED: u32 = 0x72;
const ORD_CREATE_ENDORSEMENT_KEY_PAIR: u32 = 0x78;
const ORD_NV_DEFINE_SPACE: u32 = 0xCC;
const ORD_NV_WRITE_VALUE: u32 = 0xCD;
const TSC_ORD_PHYSICAL_PRESENCE: u32 = 0x4000_000A;

pub const PHYSICAL_PRESENCE_CMD_ENABLE: u16 = 0x0020;
pub const PHYSICAL_PRESENCE_PRESENT: u16 = 0x0008;

pub const EK_CERT_INDEX: u32 = 0x1000_F000;
pub const PLATFORM_CERT_INDEX: u32 = 0x1000_F002;
/// Defining this index with size 0 sets nvLocked: from then on NV permissions apply.
const NV_INDEX_LOCK: u32 = 0xFFFF_FFFF;
/// TPM_NV_PER_OWNERREAD | TPM_NV_PER_OWNERWRITE.
const NV_PER_OWNER_RW: u32 = 0x0002_0002;

/// The antiReplay nonce swtpm_setup uses for TPM_CreateEndorsementKeyPair.
const EK_ANTI_REPLAY: [u8; 20] = [
    0x38, 0xF0, 0x30, 0x81, 0x07, 0x2B, 0x0C, 0xA9, 0x10, 0x98, 0x08, 0xC0, 0x4B, 0x05, 0x11, 0xC9,
    0x50, 0x23, 0x52, 0xC4,
];

/// The label TPM 1.2 uses for OAEP encryption of secrets to its keys.
pub const OAEP_LABEL: &[u8] = b"TCPA";

pub fn physical_presence(value: u16) -> Vec<u8> {
    command(
        TAG_RQU_COMMAND,
        TSC_ORD_PHYSICAL_PRESENCE,
        &value.to_be_bytes(),
    )
}

pub fn physical_enable() -> Vec<u8> {
    command(TAG_RQU_COMMAND, ORD_PHYSICAL_ENABLE, &[])
}

pub fn physical_set_deactivated(deactivated: bool) -> Vec<u8> {
    command(
        TAG_RQU_COMMAND,
        ORD_PHYSICAL_SET_DEACTIVATED,
        &[u8::from(deactivated)],
    )
}

/// TPM_KEY_PARMS for a 2048-bit, 2-prime RSA key with the default exponent.
fn rsa2048_key_parms(enc_scheme: u16, sig_scheme: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&1u32.to_be_bytes()); // TPM_ALG_RSA
    out.extend_from_slice(&enc_scheme.to_be_bytes());
    out.extend_from_slice(&sig_scheme.to_be_bytes());
    out.extend_from_slice(&12u32.to_be_bytes());
    out.extend_from_slice(&2048u32.to_be_bytes());
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// TPM_ES_RSAESOAEP_SHA1_MGF1, TPM_SS_NONE.
const ES_OAEP: u16 = 0x0003;
const SS_NONE: u16 = 0x0001;

pub fn create_endorsement_key_pair() -> Vec<u8> {
    let mut body = EK_ANTI_REPLAY.to_vec();
    body.extend_from_slice(&rsa2048_key_parms(ES_OAEP, SS_NONE));
    command(TAG_RQU_COMMAND, ORD_CREATE_ENDORSEMENT_KEY_PAIR, &body)
}

/// The EK's modulus from a TPM_CreateEndorsementKeyPair response (TPM_PUBKEY: key
/// parms, then the TPM_STORE_PUBKEY).
pub fn parse_endorsement_key(response: &[u8]) -> Option<Vec<u8>> {
    let mut reader = Reader::new(response.get(10..)?);
    reader.skip(8)?; // algorithmID, encScheme, sigScheme
    let parm_size = reader.u32()? as usize;
    reader.skip(parm_size)?;
    let key_len = reader.u32()? as usize;
    Some(reader.take(key_len)?.to_vec())
}

pub fn oiap() -> Vec<u8> {
    command(TAG_RQU_COMMAND, ORD_OIAP, &[])
}

/// An authorization session: its handle and the TPM's even nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSession {
    pub handle: u32,
    pub nonce_even: [u8; 20],
}

pub fn parse_oiap(response: &[u8]) -> Option<AuthSession> {
    let mut reader = Reader::new(response.get(10..)?);
    let handle = reader.u32()?;
    let nonce_even = reader.take(20)?.try_into().ok()?;
    Some(AuthSession { handle, nonce_even })
}

/// The 20-byte authorization value of a password: its SHA-1 (swtpm_setup hashes the
/// "well-known" 20 zero bytes too).
pub fn auth_value(password: &[u8]) -> [u8; 20] {
    Sha1::digest(password).into()
}

/// TPM_TakeOwnership with owner and SRK secrets already OAEP-encrypted to the EK,
/// authorized in `session` with the owner's auth value.
pub fn take_ownership(
    enc_owner_auth: &[u8],
    enc_srk_auth: &[u8],
    owner_auth: &[u8; 20],
    session: &AuthSession,
    nonce_odd: &[u8; 20],
) -> Vec<u8> {
    const PID_OWNER: u16 = 0x0005;
    let mut params = Vec::with_capacity(600);
    params.extend_from_slice(&PID_OWNER.to_be_bytes());
    params.extend_from_slice(&(enc_owner_auth.len() as u32).to_be_bytes());
    params.extend_from_slice(enc_owner_auth);
    params.extend_from_slice(&(enc_srk_auth.len() as u32).to_be_bytes());
    params.extend_from_slice(enc_srk_auth);
    params.extend_from_slice(&srk_params());

    let continue_session = 0u8;
    let mut digest_input = ORD_TAKE_OWNERSHIP.to_be_bytes().to_vec();
    digest_input.extend_from_slice(&params);
    let param_digest = Sha1::digest(&digest_input);
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(owner_auth)
        .expect("HMAC accepts keys of any length");
    mac.update(&param_digest);
    mac.update(&session.nonce_even);
    mac.update(nonce_odd);
    mac.update(&[continue_session]);
    let auth = mac.finalize().into_bytes();

    let mut body = params;
    body.extend_from_slice(&session.handle.to_be_bytes());
    body.extend_from_slice(nonce_odd);
    body.push(continue_session);
    body.extend_from_slice(&auth);
    command(TAG_RQU_AUTH1_COMMAND, ORD_TAKE_OWNERSHIP, &body)
}

/// TPM_KEY12 for the SRK: a storage key, authorization always, RSA 2048 OAEP.
fn srk_params() -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&0x0028u16.to_be_bytes()); // TPM_TAG_KEY12
    out.extend_from_slice(&0u16.to_be_bytes()); // fill
    out.extend_from_slice(&0x0011u16.to_be_bytes()); // TPM_KEY_STORAGE
    out.extend_from_slice(&0u32.to_be_bytes()); // keyFlags
    out.push(1); // TPM_AUTH_ALWAYS
    out.extend_from_slice(&rsa2048_key_parms(ES_OAEP, SS_NONE));
    out.extend_from_slice(&0u32.to_be_bytes()); // PCRInfoSize
    out.extend_from_slice(&0u32.to_be_bytes()); // pubKey.keyLength
    out.extend_from_slice(&0u32.to_be_bytes()); // encSize
    out
}

/// TPM_NV_DefineSpace without authorization (possible while nvLocked is clear).
pub fn nv_define_space(index: u32, permission: u32, size: u32) -> Vec<u8> {
    let pcr_info_short = {
        let mut info = vec![0, 3, 0, 0, 0]; // sizeOfSelect 3, nothing selected
        info.push(0x1F); // any locality
        info.extend_from_slice(&[0; 20]);
        info
    };
    let mut body = Vec::with_capacity(100);
    body.extend_from_slice(&0x0018u16.to_be_bytes()); // TPM_TAG_NV_DATA_PUBLIC
    body.extend_from_slice(&index.to_be_bytes());
    body.extend_from_slice(&pcr_info_short);
    body.extend_from_slice(&pcr_info_short);
    body.extend_from_slice(&0x0017u16.to_be_bytes()); // TPM_TAG_NV_ATTRIBUTES
    body.extend_from_slice(&permission.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0]); // bReadSTClear, bWriteSTClear, bWriteDefine
    body.extend_from_slice(&size.to_be_bytes());
    body.extend_from_slice(&[0; 20]); // encAuth
    command(TAG_RQU_COMMAND, ORD_NV_DEFINE_SPACE, &body)
}

pub fn nv_define_cert_space(index: u32, size: u32) -> Vec<u8> {
    nv_define_space(index, NV_PER_OWNER_RW, size)
}

pub fn nv_lock() -> Vec<u8> {
    nv_define_space(NV_INDEX_LOCK, 0, 0)
}

pub fn nv_write_value(index: u32, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + data.len());
    body.extend_from_slice(&index.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&(data.len() as u32).to_be_bytes());
    body.extend_from_slice(data);
    command(TAG_RQU_COMMAND, ORD_NV_WRITE_VALUE, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands() {
        assert_eq!(
            physical_presence(PHYSICAL_PRESENCE_CMD_ENABLE),
            [0, 0xC1, 0, 0, 0, 12, 0x40, 0, 0, 0x0A, 0, 0x20]
        );
        assert_eq!(
            physical_set_deactivated(false),
            [0, 0xC1, 0, 0, 0, 11, 0, 0, 0, 0x72, 0]
        );
        assert_eq!(create_endorsement_key_pair().len(), 10 + 20 + 24);
        assert_eq!(nv_lock().len(), 10 + 2 + 4 + 26 + 26 + 6 + 3 + 4 + 20);
    }

    #[test]
    fn parses_the_ek_and_oiap() {
        let mut response = vec![0, 0xC4, 0, 0, 0, 0, 0, 0, 0, 0];
        response.extend_from_slice(&rsa2048_key_parms(ES_OAEP, SS_NONE));
        response.extend_from_slice(&256u32.to_be_bytes());
        response.extend_from_slice(&[0xCD; 256]);
        response.extend_from_slice(&[0; 20]);
        assert_eq!(
            &response[34..38],
            &[0, 0, 1, 0],
            "modulus length at offset 34"
        );
        assert_eq!(parse_endorsement_key(&response), Some(vec![0xCD; 256]));
        assert_eq!(parse_endorsement_key(&response[..100]), None);
        let mut oiap = vec![0, 0xC4, 0, 0, 0, 34, 0, 0, 0, 0, 0, 0, 0, 7];
        oiap.extend_from_slice(&[9; 20]);
        assert_eq!(
            parse_oiap(&oiap),
            Some(AuthSession {
                handle: 7,
                nonce_even: [9; 20]
            })
        );
        assert_eq!(parse_oiap(&oiap[..20]), None);
    }

    #[test]
    fn take_ownership_layout() {
        let session = AuthSession {
            handle: 0x0200_0000,
            nonce_even: [1; 20],
        };
        let command = take_ownership(
            &[2; 256],
            &[3; 256],
            &auth_value(b"ooo"),
            &session,
            &[4; 20],
        );
        assert_eq!(&command[..2], &[0, 0xC2]);
        assert_eq!(&command[10..12], &[0, 5]);
        // Trailer: handle, nonceOdd, continue flag, 20-byte HMAC.
        let trailer = &command[command.len() - 45..];
        assert_eq!(&trailer[..4], &[2, 0, 0, 0]);
        assert_eq!(&trailer[4..24], &[4; 20]);
        assert_eq!(trailer[24], 0);
        assert_eq!(auth_value(&[0; 20]).len(), 20);
    }
}
