//! The TPM 2 commands swtpm_setup sends while manufacturing (manufacturing.md §1.2) and
//! the parsers for their responses, plus the EK and storage-key templates (§1.3). Pure:
//! byte strings in and out; parsers return `None` on anything malformed.

use crate::tpm::wire::{Reader, put_sized, put_u16, put_u32};
use crate::tpm::{TPM2_ST_NO_SESSIONS, TPM2_ST_SESSIONS};

pub const CC_EVICT_CONTROL: u32 = 0x120;
pub const CC_NV_DEFINE_SPACE: u32 = 0x12A;
pub const CC_PCR_ALLOCATE: u32 = 0x12B;
pub const CC_CREATE_PRIMARY: u32 = 0x131;
pub const CC_NV_WRITE: u32 = 0x137;
pub const CC_NV_WRITE_LOCK: u32 = 0x138;
pub const CC_FLUSH_CONTEXT: u32 = 0x165;
pub const CC_GET_CAPABILITY: u32 = 0x17A;

pub const RH_OWNER: u32 = 0x4000_0001;
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;
pub const RH_PLATFORM: u32 = 0x4000_000C;
const RS_PW: u32 = 0x4000_0009;
const CAP_PCRS: u32 = 5;

pub const ALG_RSA: u16 = 0x0001;
pub const ALG_SHA1: u16 = 0x0004;
pub const ALG_AES: u16 = 0x0006;
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_SHA384: u16 = 0x000C;
pub const ALG_SHA512: u16 = 0x000D;
pub const ALG_NULL: u16 = 0x0010;
pub const ALG_SM3_256: u16 = 0x0012;
pub const ALG_ECC: u16 = 0x0023;
pub const ALG_SHA3_256: u16 = 0x0027;
pub const ALG_SHA3_384: u16 = 0x0028;
pub const ALG_SHA3_512: u16 = 0x0029;
pub const ALG_CFB: u16 = 0x0043;
pub const ECC_NIST_P384: u16 = 0x0004;

/// NV attributes of every index swtpm_setup defines (§1.6): PPWRITE | WRITEDEFINE |
/// PPREAD | OWNERREAD | AUTHREAD | NO_DA | PLATFORMCREATE.
pub const NV_CERT_ATTRIBUTES: u32 = 0x4207_2001;
/// Payload bytes per NV_Write: the TPM's MAX_NV_BUFFER_SIZE is at least 1024.
pub const NV_WRITE_CHUNK: usize = 1024;

/// Object attributes (TPMA_OBJECT).
const FIXED_TPM: u32 = 0x2;
const FIXED_PARENT: u32 = 0x10;
const SENSITIVE_DATA_ORIGIN: u32 = 0x20;
const USER_WITH_AUTH: u32 = 0x40;
const ADMIN_WITH_POLICY: u32 = 0x80;
const NO_DA: u32 = 0x400;
const RESTRICTED: u32 = 0x1_0000;
const DECRYPT: u32 = 0x2_0000;
const SIGN: u32 = 0x4_0000;

/// PolicySecret(TPM_RH_ENDORSEMENT), the low-range EK policy (TCG EK profile, PolicyA).
const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];
/// PolicyOR(PolicyA, PolicyC) in SHA-384, the high-range EK policy (PolicyB).
const POLICY_B_SHA384: [u8; 48] = [
    0xB2, 0x6E, 0x7D, 0x28, 0xD1, 0x1A, 0x50, 0xBC, 0x53, 0xD8, 0x82, 0xBC, 0xF5, 0xFD, 0x3A, 0x1A,
    0x07, 0x41, 0x48, 0xBB, 0x35, 0xD3, 0xB4, 0xE4, 0xCB, 0x1C, 0x0A, 0xD9, 0xBD, 0xE4, 0x19, 0xCA,
    0xCB, 0x47, 0xBA, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0F, 0x9F, 0xC0, 0x00, 0xF3, 0xF8, 0x0E, 0x12,
];

/// The EKs swtpm_setup creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EkKind {
    /// TCG template L-1.
    Rsa2048,
    /// TCG template H-6.
    Rsa3072,
    /// TCG template H-3.
    EccP384,
}

impl EkKind {
    pub fn persistent_handle(self) -> u32 {
        match self {
            EkKind::Rsa2048 => 0x8101_0001,
            EkKind::Rsa3072 => 0x8101_001C,
            EkKind::EccP384 => 0x8101_0016,
        }
    }

    pub fn cert_index(self) -> u32 {
        match self {
            EkKind::Rsa2048 => 0x01C0_0002,
            EkKind::Rsa3072 => 0x01C0_001C,
            EkKind::EccP384 => 0x01C0_0016,
        }
    }

    pub fn template_index(self) -> u32 {
        match self {
            EkKind::Rsa2048 => 0x01C0_0004,
            EkKind::Rsa3072 => 0x01C0_001D,
            EkKind::EccP384 => 0x01C0_0017,
        }
    }

    /// How people and file names call it: `rsa2048`, `rsa3072`, `secp384r1`.
    pub fn name(self) -> &'static str {
        match self {
            EkKind::Rsa2048 => "rsa2048",
            EkKind::Rsa3072 => "rsa3072",
            EkKind::EccP384 => "secp384r1",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            EkKind::Rsa2048 => "RSA 2048",
            EkKind::Rsa3072 => "RSA 3072",
            EkKind::EccP384 => "ECC P-384",
        }
    }
}

pub const PLATFORM_CERT_INDEX: u32 = 0x01C0_8000;
pub const SPK_HANDLE: u32 = 0x8100_0001;

/// The EK template: the TCG default, or with `allow_signing` the non-standard signing
/// EK (restricted cleared, sign set, decrypt kept only with `decryption`, no symmetric
/// algorithm).
pub fn ek_template(kind: EkKind, allow_signing: bool, decryption: bool) -> Vec<u8> {
    let low_range = kind == EkKind::Rsa2048;
    let mut attributes = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | ADMIN_WITH_POLICY;
    // The low-range template has no userWithAuth; the high range has it.
    if !low_range {
        attributes |= USER_WITH_AUTH;
    }
    if allow_signing {
        attributes |= SIGN;
        if decryption {
            attributes |= DECRYPT;
        }
    } else {
        attributes |= RESTRICTED | DECRYPT;
    }
    let (name_alg, policy, aes_bits): (u16, &[u8], u16) = if low_range {
        (ALG_SHA256, &POLICY_A_SHA256, 128)
    } else {
        (ALG_SHA384, &POLICY_B_SHA384, 256)
    };
    let key_type = if kind == EkKind::EccP384 {
        ALG_ECC
    } else {
        ALG_RSA
    };
    let mut out = Vec::with_capacity(320);
    put_u16(&mut out, key_type);
    put_u16(&mut out, name_alg);
    put_u32(&mut out, attributes);
    put_sized(&mut out, policy);
    if allow_signing {
        put_u16(&mut out, ALG_NULL);
    } else {
        put_u16(&mut out, ALG_AES);
        put_u16(&mut out, aes_bits);
        put_u16(&mut out, ALG_CFB);
    }
    put_u16(&mut out, ALG_NULL); // scheme
    match kind {
        EkKind::Rsa2048 => {
            put_u16(&mut out, 2048);
            put_u32(&mut out, 0);
            put_sized(&mut out, &[0; 256]);
        }
        EkKind::Rsa3072 => {
            put_u16(&mut out, 3072);
            put_u32(&mut out, 0);
            put_u16(&mut out, 0);
        }
        EkKind::EccP384 => {
            put_u16(&mut out, ECC_NIST_P384);
            put_u16(&mut out, ALG_NULL); // kdf
            put_u16(&mut out, 0);
            put_u16(&mut out, 0);
        }
    }
    out
}

/// The storage primary key template (`--create-spk`, `--ecc`): RSA 2048/3072 or ECC
/// P-384 restricted decryption key with noDA and userWithAuth.
pub fn spk_template(ecc: bool, rsa_bits: u16) -> Vec<u8> {
    let attributes = FIXED_TPM
        | FIXED_PARENT
        | SENSITIVE_DATA_ORIGIN
        | USER_WITH_AUTH
        | NO_DA
        | RESTRICTED
        | DECRYPT;
    let high = ecc || rsa_bits > 2048;
    let mut out = Vec::with_capacity(400);
    put_u16(&mut out, if ecc { ALG_ECC } else { ALG_RSA });
    put_u16(&mut out, if high { ALG_SHA384 } else { ALG_SHA256 });
    put_u32(&mut out, attributes);
    put_u16(&mut out, 0); // no policy
    put_u16(&mut out, ALG_AES);
    put_u16(&mut out, if high { 256 } else { 128 });
    put_u16(&mut out, ALG_CFB);
    put_u16(&mut out, ALG_NULL);
    if ecc {
        put_u16(&mut out, ECC_NIST_P384);
        put_u16(&mut out, ALG_NULL);
        put_sized(&mut out, &[0; 48]);
        put_sized(&mut out, &[0; 48]);
    } else {
        put_u16(&mut out, rsa_bits);
        put_u32(&mut out, 0);
        put_sized(&mut out, &vec![0; usize::from(rsa_bits / 8)]);
    }
    out
}

/// A command: header, handles, an empty-password session when `authorized`, parameters.
fn command(code: u32, handles: &[u32], authorized: bool, parameters: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + parameters.len());
    put_u16(
        &mut out,
        if authorized {
            TPM2_ST_SESSIONS
        } else {
            TPM2_ST_NO_SESSIONS
        },
    );
    put_u32(&mut out, 0);
    put_u32(&mut out, code);
    for handle in handles {
        put_u32(&mut out, *handle);
    }
    if authorized {
        put_u32(&mut out, 9);
        put_u32(&mut out, RS_PW);
        put_u16(&mut out, 0); // nonce
        out.push(0); // session attributes
        put_u16(&mut out, 0); // password
    }
    out.extend_from_slice(parameters);
    let size = out.len() as u32;
    out[2..6].copy_from_slice(&size.to_be_bytes());
    out
}

pub fn create_primary(hierarchy: u32, template: &[u8]) -> Vec<u8> {
    let mut parameters = vec![0, 4, 0, 0, 0, 0]; // inSensitive: empty auth and data
    put_sized(&mut parameters, template);
    put_u16(&mut parameters, 0); // outsideInfo
    put_u32(&mut parameters, 0); // creationPCR
    command(CC_CREATE_PRIMARY, &[hierarchy], true, &parameters)
}

pub fn evict_control(object: u32, persistent: u32) -> Vec<u8> {
    command(
        CC_EVICT_CONTROL,
        &[RH_OWNER, object],
        true,
        &persistent.to_be_bytes(),
    )
}

pub fn flush_context(handle: u32) -> Vec<u8> {
    command(CC_FLUSH_CONTEXT, &[], false, &handle.to_be_bytes())
}

pub fn nv_define_space(index: u32, attributes: u32, size: u16) -> Vec<u8> {
    let mut parameters = vec![0, 0]; // auth
    put_u16(&mut parameters, 14);
    put_u32(&mut parameters, index);
    put_u16(&mut parameters, ALG_SHA256);
    put_u32(&mut parameters, attributes);
    put_u16(&mut parameters, 0); // authPolicy
    put_u16(&mut parameters, size);
    command(CC_NV_DEFINE_SPACE, &[RH_PLATFORM], true, &parameters)
}

/// NV_Write commands for `data`, split in chunks the TPM accepts.
pub fn nv_writes(index: u32, data: &[u8]) -> Vec<Vec<u8>> {
    data.chunks(NV_WRITE_CHUNK)
        .enumerate()
        .map(|(n, chunk)| {
            let mut parameters = Vec::with_capacity(chunk.len() + 4);
            put_sized(&mut parameters, chunk);
            put_u16(&mut parameters, (n * NV_WRITE_CHUNK) as u16);
            command(CC_NV_WRITE, &[RH_PLATFORM, index], true, &parameters)
        })
        .collect()
}

pub fn nv_write_lock(index: u32) -> Vec<u8> {
    command(CC_NV_WRITE_LOCK, &[RH_PLATFORM, index], true, &[])
}

pub fn get_capability_pcrs() -> Vec<u8> {
    let mut parameters = Vec::new();
    put_u32(&mut parameters, CAP_PCRS);
    put_u32(&mut parameters, 0);
    put_u32(&mut parameters, 64);
    command(CC_GET_CAPABILITY, &[], false, &parameters)
}

/// A PCR bank and its selection bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBank {
    pub hash_alg: u16,
    pub select: Vec<u8>,
}

pub fn pcr_allocate(banks: &[PcrBank]) -> Vec<u8> {
    let mut parameters = Vec::new();
    put_u32(&mut parameters, banks.len() as u32);
    for bank in banks {
        put_u16(&mut parameters, bank.hash_alg);
        parameters.push(bank.select.len() as u8);
        parameters.extend_from_slice(&bank.select);
    }
    command(CC_PCR_ALLOCATE, &[RH_PLATFORM], true, &parameters)
}

/// The banks a GetCapability(TPM_CAP_PCRS) response lists.
pub fn parse_pcr_banks(response: &[u8]) -> Option<Vec<PcrBank>> {
    let mut reader = Reader::new(response.get(10..)?);
    reader.skip(1)?; // moreData
    if reader.u32()? != CAP_PCRS {
        return None;
    }
    let count = reader.u32()?;
    if count > 64 {
        return None;
    }
    (0..count)
        .map(|_| {
            let hash_alg = reader.u16()?;
            let size = reader.u8()?;
            Some(PcrBank {
                hash_alg,
                select: reader.take(usize::from(size))?.to_vec(),
            })
        })
        .collect()
}

/// The bank names users give to `--pcr-banks`.
pub fn bank_name(hash_alg: u16) -> String {
    match hash_alg {
        ALG_SHA1 => "sha1".into(),
        ALG_SHA256 => "sha256".into(),
        ALG_SHA384 => "sha384".into(),
        ALG_SHA512 => "sha512".into(),
        ALG_SM3_256 => "sm3-256".into(),
        ALG_SHA3_256 => "sha3-256".into(),
        ALG_SHA3_384 => "sha3-384".into(),
        ALG_SHA3_512 => "sha3-512".into(),
        other => format!("{other:02x}"),
    }
}

pub fn bank_by_name(name: &str) -> Option<u16> {
    [
        ALG_SHA1,
        ALG_SHA256,
        ALG_SHA384,
        ALG_SHA512,
        ALG_SM3_256,
        ALG_SHA3_256,
        ALG_SHA3_384,
        ALG_SHA3_512,
    ]
    .into_iter()
    .find(|alg| bank_name(*alg) == name)
}

/// The allocation for `wanted` among the `offered` banks: the wanted ones in the order
/// given with all PCRs selected (unknown and repeated names skipped), then every other
/// offered bank with none. `None` if no wanted bank is offered.
pub fn allocation(offered: &[PcrBank], wanted: &[u16]) -> Option<Vec<PcrBank>> {
    let mut out: Vec<PcrBank> = Vec::new();
    for alg in wanted {
        if let Some(bank) = offered.iter().find(|bank| bank.hash_alg == *alg)
            && !out.iter().any(|chosen| chosen.hash_alg == *alg)
        {
            out.push(PcrBank {
                hash_alg: *alg,
                select: vec![0xFF; bank.select.len()],
            });
        }
    }
    if out.is_empty() {
        return None;
    }
    for bank in offered {
        if !out.iter().any(|chosen| chosen.hash_alg == bank.hash_alg) {
            out.push(PcrBank {
                hash_alg: bank.hash_alg,
                select: vec![0; bank.select.len()],
            });
        }
    }
    Some(out)
}

/// What CreatePrimary returned: the transient handle and the public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedPrimary {
    pub handle: u32,
    pub key: PublicArea,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicArea {
    Rsa { modulus: Vec<u8>, exponent: u32 },
    Ecc { curve: u16, x: Vec<u8>, y: Vec<u8> },
}

/// Parses a CreatePrimary response (handle, then with sessions a parameterSize, then
/// outPublic as TPM2B_PUBLIC).
pub fn parse_create_primary(response: &[u8]) -> Option<CreatedPrimary> {
    let mut reader = Reader::new(response.get(10..)?);
    let handle = reader.u32()?;
    reader.u32()?; // parameterSize
    let public_size = usize::from(reader.u16()?);
    let key = parse_public(reader.take(public_size)?)?;
    Some(CreatedPrimary { handle, key })
}

/// The unique (public key) field of a TPMT_PUBLIC.
pub fn parse_public(public: &[u8]) -> Option<PublicArea> {
    let mut reader = Reader::new(public);
    let key_type = reader.u16()?;
    reader.u16()?; // nameAlg
    reader.u32()?; // attributes
    let policy = usize::from(reader.u16()?);
    reader.skip(policy)?;
    if reader.u16()? != ALG_NULL {
        reader.skip(4)?; // keyBits, mode
    }
    if reader.u16()? != ALG_NULL {
        reader.skip(2)?; // scheme hash
    }
    match key_type {
        ALG_RSA => {
            reader.u16()?; // keyBits
            let exponent = match reader.u32()? {
                0 => 65537,
                other => other,
            };
            let size = usize::from(reader.u16()?);
            let modulus = reader.take(size)?.to_vec();
            Some(PublicArea::Rsa { modulus, exponent })
        }
        ALG_ECC => {
            let curve = reader.u16()?;
            if reader.u16()? != ALG_NULL {
                reader.skip(2)?; // kdf hash
            }
            let x_size = usize::from(reader.u16()?);
            let x = reader.take(x_size)?.to_vec();
            let y_size = usize::from(reader.u16()?);
            let y = reader.take(y_size)?.to_vec();
            Some(PublicArea::Ecc { curve, x, y })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn templates_have_the_reference_sizes_and_bytes() {
        assert_eq!(ek_template(EkKind::Rsa2048, false, false).len(), 314);
        assert_eq!(ek_template(EkKind::Rsa3072, false, false).len(), 74);
        assert_eq!(ek_template(EkKind::EccP384, false, false).len(), 74);
        assert_eq!(ek_template(EkKind::Rsa2048, true, false).len(), 310);
        let rsa3072 = ek_template(EkKind::Rsa3072, true, true);
        assert_eq!(&rsa3072[..10], &hex("0001 000C 000600F2 0030"));
        assert_eq!(&rsa3072[58..], &hex("0010 0010 0C00 00000000 0000"));
        let ecc = ek_template(EkKind::EccP384, true, true);
        assert_eq!(&ecc[58..], &hex("0010 0010 0004 0010 0000 0000"));
        let rsa2048 = ek_template(EkKind::Rsa2048, true, false);
        assert_eq!(&rsa2048[..8], &hex("0001 000B 000400B2"));
        assert_eq!(
            &ek_template(EkKind::Rsa2048, false, false)[4..8],
            &hex("000300B2")
        );
    }

    #[test]
    fn commands_match_the_observed_bytes() {
        let create = create_primary(RH_ENDORSEMENT, &ek_template(EkKind::Rsa2048, false, false));
        assert_eq!(create.len(), 355);
        assert_eq!(
            &create[..37],
            &hex(
                "80 02 00 00 01 63 00 00 01 31 40 00 00 0B 00 00 00 09 40 00 00 09 00 00 00 00 00 00 04 00 00 00 00 01 3A 00 01"
            )
        );
        assert_eq!(
            nv_define_space(0x01C0_0002, NV_CERT_ATTRIBUTES, 1018),
            hex(
                "80 02 00 00 00 2D 00 00 01 2A 40 00 00 0C 00 00 00 09 40 00 00 09 00 00 00 00 00 00 00 00 0E 01 C0 00 02 00 0B 42 07 20 01 00 00 03 FA"
            )
        );
        assert_eq!(
            nv_write_lock(0x01C0_0002),
            hex(
                "80 02 00 00 00 1F 00 00 01 38 40 00 00 0C 01 C0 00 02 00 00 00 09 40 00 00 09 00 00 00 00 00"
            )
        );
        assert_eq!(
            get_capability_pcrs(),
            hex("80 01 00 00 00 16 00 00 01 7A 00 00 00 05 00 00 00 00 00 00 00 40")
        );
    }

    #[test]
    fn pcr_allocation_matches_the_observed_bytes() {
        let offered: Vec<PcrBank> = [ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512]
            .iter()
            .map(|alg| PcrBank {
                hash_alg: *alg,
                select: vec![0xFF; 3],
            })
            .collect();
        let banks = allocation(&offered, &[ALG_SHA256, ALG_SHA256, 0x9999]).unwrap();
        assert_eq!(
            pcr_allocate(&banks),
            hex(
                "80 02 00 00 00 37 00 00 01 2B 40 00 00 0C 00 00 00 09 40 00 00 09 00 00 00 00 00 00 00 00 04 00 0B 03 FF FF FF 00 04 03 00 00 00 00 0C 03 00 00 00 00 0D 03 00 00 00"
            )
        );
        assert_eq!(allocation(&offered, &[ALG_SM3_256]), None);
    }

    #[test]
    fn nv_writes_are_split() {
        let writes = nv_writes(0x01C0_0002, &[7; 1500]);
        assert_eq!(writes.len(), 2);
        assert_eq!(&writes[1][writes[1].len() - 2..], &[0x04, 0x00]);
        assert_eq!(writes[1].len(), 10 + 8 + 4 + 9 + 2 + 476 + 2);
    }

    #[test]
    fn parses_pcr_capability() {
        let response = hex(
            "80 01 00 00 00 1B 00 00 00 00 00 00 00 00 05 00 00 00 02 00 04 03 FF FF FF 00 0B 03 00 00 00",
        );
        let banks = parse_pcr_banks(&response).unwrap();
        assert_eq!(banks.len(), 2);
        assert_eq!(
            banks[1],
            PcrBank {
                hash_alg: ALG_SHA256,
                select: vec![0; 3]
            }
        );
        assert_eq!(parse_pcr_banks(&response[..response.len() - 1]), None);
    }

    #[test]
    fn parses_public_areas() {
        let mut rsa = ek_template(EkKind::Rsa2048, false, false);
        let unique = rsa.len() - 256;
        rsa[unique..].fill(0xAB);
        assert_eq!(
            parse_public(&rsa),
            Some(PublicArea::Rsa {
                modulus: vec![0xAB; 256],
                exponent: 65537
            })
        );
        let mut ecc = ek_template(EkKind::EccP384, false, false);
        ecc.truncate(ecc.len() - 4);
        ecc.extend_from_slice(&[0, 2, 1, 2, 0, 1, 3]);
        assert_eq!(
            parse_public(&ecc),
            Some(PublicArea::Ecc {
                curve: ECC_NIST_P384,
                x: vec![1, 2],
                y: vec![3]
            })
        );
        for len in 0..rsa.len() {
            let _ = parse_public(&rsa[..len]);
            let _ = parse_create_primary(&rsa[..len]);
        }
    }
}
