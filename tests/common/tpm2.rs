//! TPM 2.0 command builders and response parsers, byte-exact per the TPM 2.0 Library
//! spec (layouts in qemu-testing.md §7). Transport-independent: anything that can
//! carry one command and return one response implements `TpmTransport`, and the
//! `Tpm2` extension trait then offers typed commands on it.

use std::fmt;

/// Carries one TPM command packet and returns the response packet.
pub trait TpmTransport {
    fn transmit(&mut self, command: &[u8]) -> Vec<u8>;
}

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;

const CC_NV_DEFINE_SPACE: u32 = 0x12A;
const CC_CREATE_PRIMARY: u32 = 0x131;
const CC_NV_WRITE: u32 = 0x137;
const CC_STARTUP: u32 = 0x144;
const CC_SHUTDOWN: u32 = 0x145;
const CC_NV_READ: u32 = 0x14E;
const CC_FLUSH_CONTEXT: u32 = 0x165;
const CC_READ_PUBLIC: u32 = 0x173;
const CC_GET_CAPABILITY: u32 = 0x17A;
const CC_GET_RANDOM: u32 = 0x17B;
const CC_PCR_READ: u32 = 0x17E;
const CC_PCR_EXTEND: u32 = 0x182;

const RH_OWNER: u32 = 0x4000_0001;
const RS_PW: u32 = 0x4000_0009;
const CAP_PCRS: u32 = 0x0000_0005;

pub const ALG_SHA256: u16 = 0x000B;
const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;
const ALG_NULL: u16 = 0x0010;
const ECC_NIST_P256: u16 = 0x0003;

/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | decrypt.
const STORAGE_KEY_ATTRIBUTES: u32 = 0x0003_0072;
/// OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD | NO_DA: an ordinary index the owner
/// (empty password) may read and write.
pub const NV_OWNER_RW_NO_DA: u32 = 0x0206_0006;

pub const RC_INITIALIZE: u32 = 0x100;
/// TPM_RC_VALUE on parameter 1: Startup(STATE) with no saved state.
pub const RC_VALUE_PARAM1: u32 = 0x1C4;
/// TPM_RC_NV_DEFINED: the NV index already exists.
pub const RC_NV_DEFINED: u32 = 0x14C;
/// TPM_RC_LOCALITY: the command is not allowed from this locality.
pub const RC_LOCALITY: u32 = 0x907;
/// TPM_RC_REFERENCE_H0: handle 1 refers to no loaded object.
pub const RC_REFERENCE_H0: u32 = 0x910;

const SHA256_DIGEST_LEN: usize = 32;
const PCR_SELECT_BYTES: usize = 3;
/// An empty-password TPM_RS_PW session answers with an empty nonce, continueSession
/// and an empty hmac.
const PASSWORD_AUTH_RESPONSE: [u8; 5] = [0x00, 0x00, 0x01, 0x00, 0x00];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupType {
    Clear,
    State,
}

impl StartupType {
    fn code(self) -> u16 {
        match self {
            StartupType::Clear => 0x0000,
            StartupType::State => 0x0001,
        }
    }
}

/// A failed command: a non-zero response code, or a response that breaks the spec.
#[derive(Clone, PartialEq, Eq)]
pub enum TpmError {
    Rc(u32),
    Malformed(String),
}

impl fmt::Display for TpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TpmError::Rc(rc) => write!(f, "TPM response code {rc:#05x}"),
            TpmError::Malformed(why) => write!(f, "malformed TPM response: {why}"),
        }
    }
}

// Debug prints like Display, so that `unwrap()` failures show the rc in hex.
impl fmt::Debug for TpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub type TpmResult<T> = Result<T, TpmError>;

/// One PCR's SHA-256 value, as PCR_Read reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrValue {
    pub update_counter: u32,
    pub digest: [u8; SHA256_DIGEST_LEN],
}

/// One active PCR bank from GetCapability(TPM_CAP_PCRS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBank {
    pub hash_alg: u16,
    /// Indices of the PCRs this bank has allocated.
    pub pcrs: Vec<u32>,
}

/// Which primary key to create in the owner hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKey {
    EccP256,
    Rsa2048,
    /// Slow to generate (hundreds of ms): for tests that need a long command.
    Rsa3072,
}

/// A loaded object's public area (TPMT_PUBLIC bytes) and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicArea {
    pub public: Vec<u8>,
    pub name: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedPrimary {
    pub handle: u32,
    pub key: PublicArea,
}

// ---------------------------------------------------------------- command builders

/// Appends fields big-endian and patches commandSize at the end.
struct CommandBuilder {
    bytes: Vec<u8>,
}

impl CommandBuilder {
    fn new(tag: u16, code: u32) -> Self {
        let mut builder = CommandBuilder { bytes: Vec::new() };
        builder.u16(tag).u32(0).u32(code);
        builder
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }

    fn tpm2b(&mut self, v: &[u8]) -> &mut Self {
        self.u16(u16::try_from(v.len()).expect("TPM2B too long"))
            .bytes(v)
    }

    /// The authorization area: one TPM_RS_PW session with an empty password.
    fn empty_password_session(&mut self) -> &mut Self {
        self.u32(9) // authorizationSize
            .u32(RS_PW)
            .tpm2b(&[]) // nonceCaller
            .u8(0) // sessionAttributes
            .tpm2b(&[]) // hmac = the password
    }

    fn finish(&mut self) -> Vec<u8> {
        let size = u32::try_from(self.bytes.len()).expect("command too long");
        self.bytes[2..6].copy_from_slice(&size.to_be_bytes());
        std::mem::take(&mut self.bytes)
    }
}

/// TPML_PCR_SELECTION with one SHA-256 bank selecting exactly `pcr`.
fn sha256_selection(b: &mut CommandBuilder, pcr: u32) {
    b.u32(1).u16(ALG_SHA256).u8(PCR_SELECT_BYTES as u8);
    b.bytes(&pcr_select_bitmap(pcr));
}

fn pcr_select_bitmap(pcr: u32) -> [u8; PCR_SELECT_BYTES] {
    assert!(pcr < 24, "PCR {pcr} out of range");
    let mut bitmap = [0u8; PCR_SELECT_BYTES];
    bitmap[(pcr / 8) as usize] = 1 << (pcr % 8);
    bitmap
}

pub fn startup(kind: StartupType) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_STARTUP)
        .u16(kind.code())
        .finish()
}

pub fn shutdown(kind: StartupType) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_SHUTDOWN)
        .u16(kind.code())
        .finish()
}

pub fn get_random(bytes_requested: u16) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_GET_RANDOM)
        .u16(bytes_requested)
        .finish()
}

pub fn pcr_extend_sha256(pcr: u32, digest: &[u8; SHA256_DIGEST_LEN]) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_PCR_EXTEND)
        .u32(pcr)
        .empty_password_session()
        .u32(1) // digests.count
        .u16(ALG_SHA256)
        .bytes(digest)
        .finish()
}

pub fn pcr_read_sha256(pcr: u32) -> Vec<u8> {
    let mut b = CommandBuilder::new(ST_NO_SESSIONS, CC_PCR_READ);
    sha256_selection(&mut b, pcr);
    b.finish()
}

/// An ordinary NV index of `size` bytes with `attributes`, empty index password,
/// SHA-256 name, no policy; authorized by the owner (empty password).
pub fn nv_define_space(index: u32, size: u16, attributes: u32) -> Vec<u8> {
    let mut public = CommandBuilder { bytes: Vec::new() };
    public
        .u32(index)
        .u16(ALG_SHA256)
        .u32(attributes)
        .tpm2b(&[]) // authPolicy
        .u16(size);
    let public = public.bytes;
    CommandBuilder::new(ST_SESSIONS, CC_NV_DEFINE_SPACE)
        .u32(RH_OWNER)
        .empty_password_session()
        .tpm2b(&[]) // auth of the new index
        .tpm2b(&public)
        .finish()
}

/// NV_Write with owner authorization.
pub fn nv_write(index: u32, offset: u16, data: &[u8]) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_NV_WRITE)
        .u32(RH_OWNER)
        .u32(index)
        .empty_password_session()
        .tpm2b(data)
        .u16(offset)
        .finish()
}

/// NV_Read with owner authorization.
pub fn nv_read(index: u32, offset: u16, size: u16) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_NV_READ)
        .u32(RH_OWNER)
        .u32(index)
        .empty_password_session()
        .u16(size)
        .u16(offset)
        .finish()
}

/// TPMT_PUBLIC template of a storage key (restricted decryption, AES-128-CFB).
fn primary_template(key: StorageKey) -> Vec<u8> {
    let mut t = CommandBuilder { bytes: Vec::new() };
    let alg = match key {
        StorageKey::EccP256 => ALG_ECC,
        StorageKey::Rsa2048 | StorageKey::Rsa3072 => ALG_RSA,
    };
    t.u16(alg)
        .u16(ALG_SHA256) // nameAlg
        .u32(STORAGE_KEY_ATTRIBUTES)
        .tpm2b(&[]) // authPolicy
        .u16(ALG_AES)
        .u16(128)
        .u16(ALG_CFB);
    match key {
        StorageKey::EccP256 => {
            t.u16(ALG_NULL) // scheme
                .u16(ECC_NIST_P256)
                .u16(ALG_NULL) // kdf
                .tpm2b(&[]) // unique.x
                .tpm2b(&[]); // unique.y
        }
        StorageKey::Rsa2048 | StorageKey::Rsa3072 => {
            let bits = if key == StorageKey::Rsa2048 {
                2048
            } else {
                3072
            };
            t.u16(ALG_NULL) // scheme
                .u16(bits) // keyBits
                .u32(0) // exponent: default 2^16+1
                .tpm2b(&[]); // unique
        }
    }
    t.bytes
}

/// CreatePrimary in the owner hierarchy, no creation PCRs.
pub fn create_primary(key: StorageKey) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_CREATE_PRIMARY)
        .u32(RH_OWNER)
        .empty_password_session()
        .u16(4) // inSensitive.size: userAuth and data, both empty
        .tpm2b(&[])
        .tpm2b(&[])
        .tpm2b(&primary_template(key))
        .tpm2b(&[]) // outsideInfo
        .u32(0) // creationPCR.count
        .finish()
}

pub fn read_public(handle: u32) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_READ_PUBLIC)
        .u32(handle)
        .finish()
}

pub fn flush_context(handle: u32) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_FLUSH_CONTEXT)
        .u32(handle)
        .finish()
}

/// GetCapability(TPM_CAP_PCRS): the allocated PCR banks.
pub fn get_capability_pcrs() -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_GET_CAPABILITY)
        .u32(CAP_PCRS)
        .u32(0) // property
        .u32(1) // propertyCount
        .finish()
}

// ---------------------------------------------------------------- response parsers

/// The size field of a command or response header (bytes 2–5).
pub fn packet_size(packet: &[u8]) -> usize {
    assert!(
        packet.len() >= 10,
        "TPM packet shorter than its header: {packet:02x?}"
    );
    u32::from_be_bytes(packet[2..6].try_into().expect("4 bytes")) as usize
}

/// The response code of a whole response, after checking the header.
pub fn response_code(response: &[u8]) -> TpmResult<u32> {
    if response.len() < 10 {
        return Err(malformed(format!(
            "{} bytes, shorter than a header",
            response.len()
        )));
    }
    if packet_size(response) != response.len() {
        return Err(malformed(format!(
            "size field {} but {} bytes",
            packet_size(response),
            response.len()
        )));
    }
    let rc = u32::from_be_bytes(response[6..10].try_into().expect("4 bytes"));
    let tag = u16::from_be_bytes([response[0], response[1]]);
    let tag_ok = if rc == 0 {
        tag == ST_NO_SESSIONS || tag == ST_SESSIONS
    } else {
        // Errors always use TPM_ST_NO_SESSIONS and carry no body.
        tag == ST_NO_SESSIONS && response.len() == 10
    };
    if !tag_ok {
        return Err(malformed(format!(
            "tag {tag:#06x} with rc {rc:#x}: {response:02x?}"
        )));
    }
    Ok(rc)
}

fn malformed(why: String) -> TpmError {
    TpmError::Malformed(why)
}

/// Reads big-endian fields from a response body, failing cleanly on truncation.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> TpmResult<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(malformed(format!("{} truncated", self.what)));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> TpmResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> TpmResult<u16> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> TpmResult<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn tpm2b(&mut self) -> TpmResult<&'a [u8]> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// A u8-length-prefixed byte string (TPMS_PCR_SELECTION's pcrSelect).
    fn tpm2b_u8(&mut self) -> TpmResult<&'a [u8]> {
        let len = self.u8()? as usize;
        self.take(len)
    }

    fn finish(self) -> TpmResult<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} has {} extra bytes",
                self.what,
                self.bytes.len()
            )))
        }
    }
}

/// Body of a successful TPM_ST_NO_SESSIONS response.
fn no_sessions_body<'a>(response: &'a [u8], what: &'static str) -> TpmResult<Reader<'a>> {
    match response_code(response)? {
        0 => {}
        rc => return Err(TpmError::Rc(rc)),
    }
    if response[..2] != ST_NO_SESSIONS.to_be_bytes() {
        return Err(malformed(format!("{what}: expected tag 0x8001")));
    }
    Ok(Reader {
        bytes: &response[10..],
        what,
    })
}

/// A successful TPM_ST_SESSIONS response: `handles` response handles, then the
/// parameters (returned), then exactly one empty-password auth response.
fn sessions_body<'a>(
    response: &'a [u8],
    handles: usize,
    what: &'static str,
) -> TpmResult<(Vec<u32>, Reader<'a>)> {
    match response_code(response)? {
        0 => {}
        rc => return Err(TpmError::Rc(rc)),
    }
    if response[..2] != ST_SESSIONS.to_be_bytes() {
        return Err(malformed(format!("{what}: expected tag 0x8002")));
    }
    let mut body = Reader {
        bytes: &response[10..],
        what,
    };
    let handles = (0..handles)
        .map(|_| body.u32())
        .collect::<TpmResult<Vec<_>>>()?;
    let parameter_size = body.u32()? as usize;
    let parameters = body.take(parameter_size)?;
    if body.bytes != PASSWORD_AUTH_RESPONSE {
        return Err(malformed(format!("{what}: auth area {:02x?}", body.bytes)));
    }
    Ok((
        handles,
        Reader {
            bytes: parameters,
            what,
        },
    ))
}

pub fn parse_no_output(response: &[u8]) -> TpmResult<()> {
    no_sessions_body(response, "response")?.finish()
}

pub fn parse_no_output_with_session(response: &[u8]) -> TpmResult<()> {
    sessions_body(response, 0, "response")?.1.finish()
}

pub fn parse_get_random(response: &[u8]) -> TpmResult<Vec<u8>> {
    let mut body = no_sessions_body(response, "GetRandom")?;
    let random = body.tpm2b()?.to_vec();
    body.finish()?;
    Ok(random)
}

/// PCR_Read of one SHA-256 PCR: checks that exactly that PCR came back.
pub fn parse_pcr_read_sha256(response: &[u8], pcr: u32) -> TpmResult<PcrValue> {
    let mut body = no_sessions_body(response, "PCR_Read")?;
    let update_counter = body.u32()?;
    let banks = body.u32()?;
    let alg = body.u16()?;
    let select = body.tpm2b_u8()?;
    if banks != 1 || alg != ALG_SHA256 || select != pcr_select_bitmap(pcr) {
        return Err(malformed(format!(
            "PCR_Read returned selection count {banks} alg {alg:#x} bitmap {select:02x?}"
        )));
    }
    if body.u32()? != 1 {
        return Err(malformed("PCR_Read digest count is not 1".into()));
    }
    let digest = body.tpm2b()?;
    let digest: [u8; SHA256_DIGEST_LEN] = digest
        .try_into()
        .map_err(|_| malformed(format!("PCR_Read digest of {} bytes", digest.len())))?;
    body.finish()?;
    Ok(PcrValue {
        update_counter,
        digest,
    })
}

pub fn parse_nv_read(response: &[u8]) -> TpmResult<Vec<u8>> {
    let (_, mut body) = sessions_body(response, 0, "NV_Read")?;
    let data = body.tpm2b()?.to_vec();
    body.finish()?;
    Ok(data)
}

pub fn parse_create_primary(response: &[u8]) -> TpmResult<CreatedPrimary> {
    let (handles, mut body) = sessions_body(response, 1, "CreatePrimary")?;
    let public = body.tpm2b()?.to_vec();
    body.tpm2b()?; // creationData
    body.tpm2b()?; // creationHash
    body.u16()?; // creationTicket.tag
    body.u32()?; // creationTicket.hierarchy
    body.tpm2b()?; // creationTicket.digest
    let name = body.tpm2b()?.to_vec();
    body.finish()?;
    Ok(CreatedPrimary {
        handle: handles[0],
        key: PublicArea { public, name },
    })
}

pub fn parse_read_public(response: &[u8]) -> TpmResult<PublicArea> {
    let mut body = no_sessions_body(response, "ReadPublic")?;
    let public = body.tpm2b()?.to_vec();
    let name = body.tpm2b()?.to_vec();
    body.tpm2b()?; // qualifiedName
    body.finish()?;
    Ok(PublicArea { public, name })
}

pub fn parse_get_capability_pcrs(response: &[u8]) -> TpmResult<Vec<PcrBank>> {
    let mut body = no_sessions_body(response, "GetCapability")?;
    body.u8()?; // moreData
    let capability = body.u32()?;
    if capability != CAP_PCRS {
        return Err(malformed(format!(
            "capability {capability:#x}, wanted TPM_CAP_PCRS"
        )));
    }
    let count = body.u32()?;
    let mut banks = Vec::new();
    for _ in 0..count {
        let hash_alg = body.u16()?;
        let select = body.tpm2b_u8()?;
        let pcrs = (0..select.len() as u32 * 8)
            .filter(|&i| select[(i / 8) as usize] & (1 << (i % 8)) != 0)
            .collect();
        banks.push(PcrBank { hash_alg, pcrs });
    }
    body.finish()?;
    Ok(banks)
}

// ---------------------------------------------------------------- typed commands

/// Typed TPM 2 commands over any transport.
pub trait Tpm2: TpmTransport {
    fn startup(&mut self, kind: StartupType) -> TpmResult<()> {
        parse_no_output(&self.transmit(&startup(kind)))
    }

    fn shutdown(&mut self, kind: StartupType) -> TpmResult<()> {
        parse_no_output(&self.transmit(&shutdown(kind)))
    }

    fn get_random(&mut self, bytes_requested: u16) -> TpmResult<Vec<u8>> {
        parse_get_random(&self.transmit(&get_random(bytes_requested)))
    }

    fn pcr_extend_sha256(&mut self, pcr: u32, digest: &[u8; 32]) -> TpmResult<()> {
        parse_no_output_with_session(&self.transmit(&pcr_extend_sha256(pcr, digest)))
    }

    fn pcr_read_sha256(&mut self, pcr: u32) -> TpmResult<PcrValue> {
        parse_pcr_read_sha256(&self.transmit(&pcr_read_sha256(pcr)), pcr)
    }

    fn nv_define_space(&mut self, index: u32, size: u16, attributes: u32) -> TpmResult<()> {
        let command = nv_define_space(index, size, attributes);
        parse_no_output_with_session(&self.transmit(&command))
    }

    fn nv_write(&mut self, index: u32, offset: u16, data: &[u8]) -> TpmResult<()> {
        parse_no_output_with_session(&self.transmit(&nv_write(index, offset, data)))
    }

    fn nv_read(&mut self, index: u32, offset: u16, size: u16) -> TpmResult<Vec<u8>> {
        parse_nv_read(&self.transmit(&nv_read(index, offset, size)))
    }

    fn create_primary(&mut self, key: StorageKey) -> TpmResult<CreatedPrimary> {
        parse_create_primary(&self.transmit(&create_primary(key)))
    }

    fn read_public(&mut self, handle: u32) -> TpmResult<PublicArea> {
        parse_read_public(&self.transmit(&read_public(handle)))
    }

    fn flush_context(&mut self, handle: u32) -> TpmResult<()> {
        parse_no_output(&self.transmit(&flush_context(handle)))
    }

    fn pcr_banks(&mut self) -> TpmResult<Vec<PcrBank>> {
        parse_get_capability_pcrs(&self.transmit(&get_capability_pcrs()))
    }
}

impl<T: TpmTransport + ?Sized> Tpm2 for T {}
