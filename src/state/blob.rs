//! swtpm's wrapping of libtpms state (state-format.md §3–§5), plain or encrypted. Pure:
//! bytes and keys in, bytes out; IVs come from the caller's [`IvSource`].
//!
//! Two layouts share the container of [`super::tlv`]:
//! * the *stored* form (state files): the libtpms blob in record 1, or — with a state
//!   key — encrypted in records 2 (ciphertext), 3 (HMAC) and 6 (IV);
//! * the *migration* form (GET/SET_STATEBLOB, header flag 0x4): the stored-form records
//!   nested in record 4, or — with a migration key — encrypted in records 5, 3 and 7.
//!
//! A header of version 1 (written by swtpm before 0.1) carries the data itself instead of
//! records: plain, or in the legacy encrypted form.

use std::fmt;

use super::crypto::{self, CryptoError, IvSource};
use super::key::{AesKey, KeySize};
use super::tlv::{self, HeaderError, find_record, push_record, record_len, split_header};
use crate::ctrl::protocol::result;

/// Header flag: the data is encrypted with the state key.
const FLAG_ENCRYPTED: u16 = 0x0001;
/// Header flag: the migration layer is encrypted with the migration key.
const FLAG_MIGRATION_ENCRYPTED: u16 = 0x0002;
/// Header flag: the payload is in migration layout (set on every GET_STATEBLOB blob).
const FLAG_MIGRATION_DATA: u16 = 0x0004;
/// Header flag: the state key is a 256-bit key (else 128).
const FLAG_ENCRYPTED_256BIT_KEY: u16 = 0x0008;
/// Header flag: the migration key is a 256-bit key (else 128).
const FLAG_MIGRATION_256BIT_KEY: u16 = 0x0010;

const TAG_DATA: u16 = 1;
const TAG_ENCRYPTED_DATA: u16 = 2;
const TAG_HMAC: u16 = 3;
const TAG_MIGRATION_DATA: u16 = 4;
const TAG_ENCRYPTED_MIGRATION_DATA: u16 = 5;
const TAG_IVEC_ENCRYPTED_DATA: u16 = 6;
const TAG_IVEC_ENCRYPTED_MIGRATION_DATA: u16 = 7;

/// Which of the two keys a layer of encryption uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// `--key`: state files, and GET_STATEBLOB without DECRYPTED.
    State,
    /// `--migration-key`: the outer layer of GET/SET_STATEBLOB blobs.
    Migration,
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::State => "state key (--key)",
            KeyRole::Migration => "migration key (--migration-key)",
        })
    }
}

/// One layer of encryption: its records and header flags.
struct Layer {
    role: KeyRole,
    plain_tag: u16,
    encrypted_tag: u16,
    iv_tag: u16,
    encrypted_flag: u16,
    key_256_flag: u16,
}

const STATE_LAYER: Layer = Layer {
    role: KeyRole::State,
    plain_tag: TAG_DATA,
    encrypted_tag: TAG_ENCRYPTED_DATA,
    iv_tag: TAG_IVEC_ENCRYPTED_DATA,
    encrypted_flag: FLAG_ENCRYPTED,
    key_256_flag: FLAG_ENCRYPTED_256BIT_KEY,
};

const MIGRATION_LAYER: Layer = Layer {
    role: KeyRole::Migration,
    plain_tag: TAG_MIGRATION_DATA,
    encrypted_tag: TAG_ENCRYPTED_MIGRATION_DATA,
    iv_tag: TAG_IVEC_ENCRYPTED_MIGRATION_DATA,
    encrypted_flag: FLAG_MIGRATION_ENCRYPTED,
    key_256_flag: FLAG_MIGRATION_256BIT_KEY,
};

/// Why a blob was refused, each mapped to the result swtpm gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("it has unknown layout version {0}")]
    UnknownVersion(u8),
    #[error("it has no {0} record")]
    MissingRecord(&'static str),
    /// SET_STATEBLOB of a blob that needs a key this daemon does not have.
    #[error("it is encrypted with a {0}, but none is configured")]
    KeyNotFound(KeyRole),
    /// A state file that is encrypted while no `--key` is given.
    #[error("it is encrypted, but no state key (--key) is configured")]
    EncryptedWithoutKey,
    /// A plain state file while `--key` is given: state files must be encrypted.
    #[error(
        "it is not encrypted, but a state key (--key) is configured; convert it with a GET/SET_STATEBLOB round trip (swtpm_ioctl --save/--load) or start without --key"
    )]
    NotEncrypted,
    #[error("it needs a {needed}-bit {role}, but the configured key has {configured} bits")]
    WrongKeySize {
        role: KeyRole,
        needed: usize,
        configured: usize,
    },
    /// Decryption or encryption with a configured key failed (the cause is part of the
    /// message: a wrong key and tampered data look the same to an HMAC).
    #[error("{cause}; checked with the {role}")]
    Crypto { role: KeyRole, cause: CryptoError },
}

impl BlobError {
    /// The TPM result swtpm answers for this failure (on the control channel, or to
    /// libtpms when a state file is loaded).
    pub fn result_code(&self) -> u32 {
        match self {
            BlobError::Header(HeaderError::TooShort(_) | HeaderError::LengthMismatch { .. }) => {
                result::TPM_BAD_PARAMETER
            }
            BlobError::Header(HeaderError::TooNew(_)) => result::TPM_BAD_VERSION,
            BlobError::Header(HeaderError::HeaderSize(_)) => result::TPM_BAD_DATASIZE,
            BlobError::UnknownVersion(_)
            | BlobError::MissingRecord(_)
            | BlobError::EncryptedWithoutKey
            | BlobError::NotEncrypted => result::TPM_FAIL,
            BlobError::KeyNotFound(_) => result::TPM_KEYNOTFOUND,
            BlobError::WrongKeySize { .. } => result::TPM_BAD_KEY_PROPERTY,
            BlobError::Crypto { cause, .. } => match cause {
                CryptoError::HmacTooShort(_) => result::TPM_FAIL,
                CryptoError::Random(_) => result::TPM_ENCRYPT_ERROR,
                CryptoError::IntegrityCheckFailed
                | CryptoError::IvTooShort(_)
                | CryptoError::CiphertextLength { .. }
                | CryptoError::BadPadding
                | CryptoError::DigestMismatch => result::TPM_DECRYPT_ERROR,
            },
        }
    }
}

impl Layer {
    /// Appends the encrypted records of `plaintext` and returns the header flags they need.
    fn seal(
        &self,
        key: &AesKey,
        plaintext: &[u8],
        ivs: &mut dyn IvSource,
        out: &mut Vec<u8>,
    ) -> Result<u16, BlobError> {
        let sealed = crypto::seal(key, plaintext, ivs).map_err(|cause| BlobError::Crypto {
            role: self.role,
            cause,
        })?;
        push_record(out, self.encrypted_tag, &sealed.ciphertext);
        push_record(out, TAG_HMAC, &sealed.hmac);
        push_record(out, self.iv_tag, &sealed.iv);
        Ok(self.flags_for(key))
    }

    fn flags_for(&self, key: &AesKey) -> u16 {
        match key.size() {
            KeySize::Aes128 => self.encrypted_flag,
            KeySize::Aes256 => self.encrypted_flag | self.key_256_flag,
        }
    }

    /// Decrypts this layer of a payload whose header had `version` and `flags`.
    fn open(
        &self,
        key: &AesKey,
        version: u8,
        flags: u16,
        payload: &[u8],
    ) -> Result<Vec<u8>, BlobError> {
        let needed = if flags & self.key_256_flag != 0 {
            KeySize::Aes256
        } else {
            KeySize::Aes128
        };
        if key.size() != needed {
            return Err(BlobError::WrongKeySize {
                role: self.role,
                needed: needed.bits(),
                configured: key.size().bits(),
            });
        }
        let crypto_error = |cause| BlobError::Crypto {
            role: self.role,
            cause,
        };
        if version == 1 {
            return crypto::open_legacy(key, payload).map_err(crypto_error);
        }
        let (Some(ciphertext), Some(hmac)) = (
            find_record(payload, self.encrypted_tag),
            find_record(payload, TAG_HMAC),
        ) else {
            return Err(BlobError::MissingRecord("encrypted data and HMAC"));
        };
        let iv = find_record(payload, self.iv_tag);
        crypto::open(key, ciphertext, hmac, iv).map_err(crypto_error)
    }

    /// The plain records (or, for version 1, the data) of a layer that is not encrypted.
    fn plain<'a>(&self, version: u8, payload: &'a [u8]) -> Result<&'a [u8], BlobError> {
        if version == 1 {
            return Ok(payload);
        }
        find_record(payload, self.plain_tag).ok_or(BlobError::MissingRecord(
            if self.role == KeyRole::State {
                "plain data"
            } else {
                "migration data"
            },
        ))
    }
}

fn supported_version(version: u8) -> Result<u8, BlobError> {
    match version {
        1 | 2 => Ok(version),
        other => Err(BlobError::UnknownVersion(other)),
    }
}

/// The stored form of a libtpms blob (what a state file holds), encrypted if `key` is
/// given.
pub fn wrap_stored(
    state: &[u8],
    key: Option<&AesKey>,
    ivs: &mut dyn IvSource,
) -> Result<Vec<u8>, BlobError> {
    let mut records = Vec::with_capacity(record_len(state.len()) + 128);
    let flags = match key {
        Some(key) => STATE_LAYER.seal(key, state, ivs, &mut records)?,
        None => {
            push_record(&mut records, TAG_DATA, state);
            0
        }
    };
    Ok(tlv::with_header(flags, &records))
}

/// The libtpms blob in a stored blob. With a state key the blob must be encrypted;
/// without one it must not be.
pub fn unwrap_stored(blob: &[u8], key: Option<&AesKey>) -> Result<Vec<u8>, BlobError> {
    let (header, payload) = split_header(blob)?;
    let version = supported_version(header.version)?;
    match key {
        Some(key) => STATE_LAYER
            .open(key, version, header.flags, payload)
            .map_err(|err| match err {
                BlobError::MissingRecord(_) if find_record(payload, TAG_DATA).is_some() => {
                    BlobError::NotEncrypted
                }
                err => err,
            }),
        None => STATE_LAYER
            .plain(version, payload)
            .map(<[u8]>::to_vec)
            .map_err(|err| {
                if version == 2 && find_record(payload, TAG_ENCRYPTED_DATA).is_some() {
                    BlobError::EncryptedWithoutKey
                } else {
                    err
                }
            }),
    }
}

/// The migration form GET_STATEBLOB returns for a libtpms blob: state-key encrypted
/// inside if `state_key` is given, migration-key encrypted outside if `migration_key` is.
pub fn wrap_migration(
    state: &[u8],
    state_key: Option<&AesKey>,
    migration_key: Option<&AesKey>,
    ivs: &mut dyn IvSource,
) -> Result<Vec<u8>, BlobError> {
    let mut inner = Vec::with_capacity(record_len(state.len()) + 128);
    let mut flags = FLAG_MIGRATION_DATA;
    match state_key {
        Some(key) => flags |= STATE_LAYER.seal(key, state, ivs, &mut inner)?,
        None => push_record(&mut inner, TAG_DATA, state),
    }
    let mut outer = Vec::with_capacity(record_len(inner.len()) + 128);
    match migration_key {
        Some(key) => flags |= MIGRATION_LAYER.seal(key, &inner, ivs, &mut outer)?,
        None => push_record(&mut outer, TAG_MIGRATION_DATA, &inner),
    }
    Ok(tlv::with_header(flags, &outer))
}

/// The libtpms blob in a SET_STATEBLOB blob. The migration layer is decrypted if the
/// header says so; the state layer if the header says so or `request_encrypted` (the
/// request's PTM_STATE_FLAG_ENCRYPTED) does. A blob without migration encryption is
/// accepted even when a migration key is configured.
pub fn unwrap_migration(
    blob: &[u8],
    request_encrypted: bool,
    state_key: Option<&AesKey>,
    migration_key: Option<&AesKey>,
) -> Result<Vec<u8>, BlobError> {
    let (header, payload) = split_header(blob)?;
    let version = supported_version(header.version)?;
    let decrypted_inner;
    let inner = if header.flags & FLAG_MIGRATION_ENCRYPTED != 0 {
        let key = migration_key.ok_or(BlobError::KeyNotFound(KeyRole::Migration))?;
        decrypted_inner = MIGRATION_LAYER.open(key, version, header.flags, payload)?;
        &decrypted_inner[..]
    } else {
        MIGRATION_LAYER.plain(version, payload)?
    };
    if request_encrypted || header.flags & FLAG_ENCRYPTED != 0 {
        let key = state_key.ok_or(BlobError::KeyNotFound(KeyRole::State))?;
        STATE_LAYER.open(key, version, header.flags, inner)
    } else {
        STATE_LAYER.plain(version, inner).map(<[u8]>::to_vec)
    }
}

/// True when a SET_STATEBLOB payload means "clear this blob" (empty or header only).
pub fn is_empty_blob(blob: &[u8]) -> bool {
    blob.is_empty() || (blob.len() == tlv::HEADER_LEN && split_header(blob).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::crypto::tests::CountingIvs;
    use crate::state::tlv::HEADER_LEN;

    fn key128() -> AesKey {
        AesKey::from_bytes(&[0x11; 16]).unwrap()
    }

    fn key256() -> AesKey {
        AesKey::from_bytes(&[0x22; 32]).unwrap()
    }

    fn flags(blob: &[u8]) -> u16 {
        u16::from_be_bytes([blob[4], blob[5]])
    }

    fn tags(records: &[u8]) -> Vec<u16> {
        let mut out = Vec::new();
        let mut rest = records;
        while rest.len() >= 6 {
            out.push(u16::from_be_bytes([rest[0], rest[1]]));
            let len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
            rest = &rest[6 + len..];
        }
        out
    }

    fn ivs() -> CountingIvs {
        CountingIvs(0)
    }

    /// A version-1 blob (swtpm before 0.1): header, then the data itself.
    fn version1(flags: u16, data: &[u8]) -> Vec<u8> {
        let mut blob = tlv::with_header(flags, data);
        blob[0] = 1;
        blob
    }

    #[test]
    fn plain_stored_form_matches_swtpm_layout() {
        let blob = wrap_stored(&[0xAA; 3], None, &mut ivs()).unwrap();
        assert_eq!(
            blob,
            [
                2, 1, 0, 10, 0, 0, 0, 0, 0, 19, 0, 1, 0, 0, 0, 3, 0xAA, 0xAA, 0xAA
            ]
        );
        assert_eq!(unwrap_stored(&blob, None).unwrap(), [0xAA; 3]);
    }

    #[test]
    fn encrypted_stored_form_matches_swtpm_layout() {
        // state-format.md §3.4: TPM 1.2 AES-128 file of 1260 bytes from 1184 bytes of
        // ciphertext (a libtpms blob of 1168 to 1183 bytes; the sizes of §5.1 narrow it
        // down to 1168 to 1177).
        let state = vec![0x5A; 1170];
        let blob = wrap_stored(&state, Some(&key128()), &mut ivs()).unwrap();
        assert_eq!(blob.len(), 1260);
        assert_eq!(&blob[..10], &[2, 1, 0, 10, 0, 1, 0, 0, 4, 0xec]);
        assert_eq!(&blob[10..16], &[0, 2, 0, 0, 4, 0xa0]);
        assert_eq!(tags(&blob[HEADER_LEN..]), [2, 3, 6]);
        assert_eq!(unwrap_stored(&blob, Some(&key128())).unwrap(), state);

        let blob = wrap_stored(&state, Some(&key256()), &mut ivs()).unwrap();
        assert_eq!(flags(&blob), 0x0009);
        // 32-byte IV record for a 256-bit key: 10 + (6 + 1184) + (6 + 32) + (6 + 32).
        assert_eq!(blob.len(), 1276);
        assert_eq!(unwrap_stored(&blob, Some(&key256())).unwrap(), state);
    }

    #[test]
    fn stored_form_and_key_must_agree() {
        let plain = wrap_stored(b"state", None, &mut ivs()).unwrap();
        let encrypted = wrap_stored(b"state", Some(&key128()), &mut ivs()).unwrap();
        assert_eq!(
            unwrap_stored(&plain, Some(&key128())),
            Err(BlobError::NotEncrypted)
        );
        assert_eq!(BlobError::NotEncrypted.result_code(), 0x09);
        assert_eq!(
            unwrap_stored(&encrypted, None),
            Err(BlobError::EncryptedWithoutKey)
        );
        assert_eq!(BlobError::EncryptedWithoutKey.result_code(), 0x09);
        // The header's key size is checked first (swtpm answers 0x28 for a plain file
        // and a 256-bit key).
        let wrong_size = unwrap_stored(&plain, Some(&key256())).unwrap_err();
        assert_eq!(
            wrong_size,
            BlobError::WrongKeySize {
                role: KeyRole::State,
                needed: 128,
                configured: 256
            }
        );
        assert_eq!(wrong_size.result_code(), 0x28);
        assert_eq!(
            unwrap_stored(&encrypted, Some(&key256()))
                .unwrap_err()
                .result_code(),
            0x28
        );
    }

    #[test]
    fn wrong_key_and_tampering_are_decrypt_errors() {
        let blob = wrap_stored(b"state", Some(&key128()), &mut ivs()).unwrap();
        let other = AesKey::from_bytes(&[0x99; 16]).unwrap();
        let err = unwrap_stored(&blob, Some(&other)).unwrap_err();
        assert_eq!(err.result_code(), 0x21);
        assert!(
            err.to_string().contains("wrong key or tampered data"),
            "{err}"
        );
        assert!(err.to_string().contains("--key"), "{err}");
        for at in HEADER_LEN + 6..blob.len() {
            let mut tampered = blob.clone();
            tampered[at] ^= 0x40;
            let err = unwrap_stored(&tampered, Some(&key128())).unwrap_err();
            assert!(matches!(err.result_code(), 0x21 | 0x09), "byte {at}: {err}");
        }
    }

    #[test]
    fn missing_records_with_a_key() {
        let mut records = Vec::new();
        push_record(&mut records, TAG_ENCRYPTED_DATA, &[0; 16]);
        let blob = tlv::with_header(FLAG_ENCRYPTED, &records);
        assert_eq!(
            unwrap_stored(&blob, Some(&key128())),
            Err(BlobError::MissingRecord("encrypted data and HMAC"))
        );
        // An HMAC record shorter than 32 bytes is TPM_FAIL, as in swtpm.
        push_record(&mut records, TAG_HMAC, &[0; 31]);
        let blob = tlv::with_header(FLAG_ENCRYPTED, &records);
        assert_eq!(
            unwrap_stored(&blob, Some(&key128()))
                .unwrap_err()
                .result_code(),
            0x09
        );
    }

    #[test]
    fn legacy_version_1_stored_blobs() {
        use sha2::{Digest, Sha256};
        assert_eq!(
            unwrap_stored(&version1(0, b"raw state"), None).unwrap(),
            b"raw state"
        );
        // Encrypted: zero IV, SHA-256 of the data in front. Built by sealing with an IV
        // source that gives zeros and taking the ciphertext alone.
        let key = key128();
        let plaintext = [Sha256::digest(b"old state").as_slice(), b"old state"].concat();
        let ciphertext = crypto::seal(&key, &plaintext, &mut ZeroIvs)
            .unwrap()
            .ciphertext;
        assert_eq!(
            unwrap_stored(&version1(0, &ciphertext), Some(&key)).unwrap(),
            b"old state"
        );
        assert_eq!(
            unwrap_stored(
                &version1(0, &ciphertext),
                Some(&AesKey::from_bytes(&[3; 16]).unwrap())
            )
            .unwrap_err()
            .result_code(),
            0x21
        );
    }

    struct ZeroIvs;

    impl IvSource for ZeroIvs {
        fn fill(&mut self, iv: &mut [u8]) -> Result<(), CryptoError> {
            iv.fill(0);
            Ok(())
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut blob = wrap_stored(b"x", None, &mut ivs()).unwrap();
        blob[0] = 9;
        assert_eq!(
            unwrap_stored(&blob, None),
            Err(BlobError::UnknownVersion(9))
        );
        assert_eq!(
            unwrap_stored(&blob, Some(&key128())),
            Err(BlobError::UnknownVersion(9))
        );
        assert_eq!(
            unwrap_migration(&blob, false, None, None),
            Err(BlobError::UnknownVersion(9))
        );
    }

    #[test]
    fn header_errors_keep_swtpms_codes() {
        let blob = wrap_stored(b"x", None, &mut ivs()).unwrap();
        let mut short = blob.clone();
        short[9] += 1;
        assert_eq!(unwrap_stored(&short, None).unwrap_err().result_code(), 0x03);
        let mut too_new = blob.clone();
        too_new[1] = 3;
        assert_eq!(
            unwrap_stored(&too_new, None).unwrap_err().result_code(),
            0x2E
        );
        let mut header_size = blob;
        header_size[3] = 11;
        assert_eq!(
            unwrap_migration(&header_size, false, None, None)
                .unwrap_err()
                .result_code(),
            0x2B
        );
    }

    #[test]
    fn plain_migration_form_matches_swtpm_layout() {
        let blob = wrap_migration(&[7; 2], None, None, &mut ivs()).unwrap();
        assert_eq!(&blob[..10], &[2, 1, 0, 10, 0, 4, 0, 0, 0, 24]);
        assert_eq!(&blob[10..16], &[0, 4, 0, 0, 0, 8]);
        assert_eq!(&blob[16..22], &[0, 1, 0, 0, 0, 2]);
        assert_eq!(unwrap_migration(&blob, false, None, None).unwrap(), [7; 2]);
    }

    #[test]
    fn migration_flags_and_sizes_match_swtpm() {
        // state-format.md §5.1, TPM 1.2 with 128-bit state and migration keys: flags 0x7
        // and 1340 bytes without DECRYPTED, 0x6 and 1260 bytes with it, for a libtpms
        // blob whose stored file had 1260 bytes (1168 to 1177 bytes fit all three).
        let state = vec![1u8; 1170];
        let (k, m) = (key128(), key128());
        let both = wrap_migration(&state, Some(&k), Some(&m), &mut ivs()).unwrap();
        assert_eq!((flags(&both), both.len()), (0x0007, 1340));
        assert_eq!(tags(&both[HEADER_LEN..]), [5, 3, 7]);
        let decrypted = wrap_migration(&state, None, Some(&m), &mut ivs()).unwrap();
        assert_eq!((flags(&decrypted), decrypted.len()), (0x0006, 1260));
        let (k, m) = (key256(), key256());
        let both = wrap_migration(&state, Some(&k), Some(&m), &mut ivs()).unwrap();
        assert_eq!(flags(&both), 0x001F);
        let decrypted = wrap_migration(&state, None, Some(&m), &mut ivs()).unwrap();
        assert_eq!(flags(&decrypted), 0x0016);
        let state_only = wrap_migration(&state, Some(&k), None, &mut ivs()).unwrap();
        assert_eq!(flags(&state_only), 0x000D);
        assert_eq!(tags(&state_only[HEADER_LEN..]), [4]);
    }

    #[test]
    fn migration_round_trips_with_any_key_combination() {
        let keys = [None, Some(key128()), Some(key256())];
        for state_key in &keys {
            for migration_key in &keys {
                let blob = wrap_migration(
                    b"libtpms state",
                    state_key.as_ref(),
                    migration_key.as_ref(),
                    &mut ivs(),
                )
                .unwrap();
                let back =
                    unwrap_migration(&blob, false, state_key.as_ref(), migration_key.as_ref());
                assert_eq!(back.unwrap(), b"libtpms state");
                // The IV of each layer is as long as that layer's key.
                if let Some(key) = migration_key {
                    let iv = find_record(&blob[HEADER_LEN..], 7).unwrap();
                    assert_eq!(iv.len(), key.size().bytes());
                }
            }
        }
    }

    #[test]
    fn set_stateblob_key_checks() {
        let (k, m) = (key128(), key256());
        let both = wrap_migration(b"s", Some(&k), Some(&m), &mut ivs()).unwrap();
        assert_eq!(
            unwrap_migration(&both, false, Some(&k), None),
            Err(BlobError::KeyNotFound(KeyRole::Migration))
        );
        assert_eq!(
            unwrap_migration(&both, false, None, Some(&m)),
            Err(BlobError::KeyNotFound(KeyRole::State))
        );
        assert_eq!(BlobError::KeyNotFound(KeyRole::State).result_code(), 0x0D);
        assert_eq!(
            unwrap_migration(&both, false, Some(&k), Some(&key128()))
                .unwrap_err()
                .result_code(),
            0x28
        );
        let other = AesKey::from_bytes(&[0x33; 32]).unwrap();
        assert_eq!(
            unwrap_migration(&both, false, Some(&k), Some(&other))
                .unwrap_err()
                .result_code(),
            0x21
        );
        // A blob without migration encryption is fine with a migration key configured.
        let plain = wrap_migration(b"s", None, None, &mut ivs()).unwrap();
        assert_eq!(
            unwrap_migration(&plain, false, Some(&k), Some(&m)).unwrap(),
            b"s"
        );
        // The request flag asks for state decryption: without a key that is 0x0D, with
        // one a plain blob lacks the encrypted records (TPM_FAIL).
        assert_eq!(
            unwrap_migration(&plain, true, None, Some(&m)),
            Err(BlobError::KeyNotFound(KeyRole::State))
        );
        assert_eq!(
            unwrap_migration(&plain, true, Some(&k), None)
                .unwrap_err()
                .result_code(),
            0x09
        );
        // A state-encrypted blob is decrypted because its header says so.
        let state_only = wrap_migration(b"s", Some(&k), None, &mut ivs()).unwrap();
        assert_eq!(
            unwrap_migration(&state_only, false, Some(&k), None).unwrap(),
            b"s"
        );
    }

    #[test]
    fn stored_form_is_not_a_migration_blob() {
        let stored = wrap_stored(b"s", None, &mut ivs()).unwrap();
        assert_eq!(
            unwrap_migration(&stored, false, None, None),
            Err(BlobError::MissingRecord("migration data"))
        );
    }

    #[test]
    fn version_1_migration_blobs() {
        assert_eq!(
            unwrap_migration(&version1(FLAG_MIGRATION_DATA, b"raw"), false, None, None).unwrap(),
            b"raw"
        );
    }

    #[test]
    fn empty_blobs() {
        assert!(is_empty_blob(&[]));
        assert!(is_empty_blob(&[2, 1, 0, 10, 0, 4, 0, 0, 0, 10]));
        assert!(!is_empty_blob(
            &wrap_migration(b"x", None, None, &mut ivs()).unwrap()
        ));
    }

    /// Files and blobs written by Debian's swtpm 0.7.1 with known keys
    /// (tests/fixtures/swtpm-0.7.1/make-key-fixtures.sh).
    mod swtpm_fixtures {
        use super::*;
        use crate::state::key::{self, Kdf};

        macro_rules! fixture {
            ($name:literal) => {
                include_bytes!(concat!("../../tests/fixtures/swtpm-0.7.1/", $name))
            };
        }

        fn passphrase_key(kdf: Kdf, size: KeySize) -> AesKey {
            key::key_from_passphrase(fixture!("passphrase"), kdf, size)
        }

        /// The permanent-state file decrypts to the libtpms blob that the plain
        /// `--save` blob of the same daemon carries, and that is a TPM 1.2 permanent
        /// state (format tag 1, TPM_PERMANENT_DATA tag 0x22).
        fn check(permall: &[u8], save: &[u8], state_key: &AesKey, migration_key: Option<&AesKey>) {
            let from_file = unwrap_stored(permall, Some(state_key)).unwrap();
            let from_save = unwrap_migration(save, false, None, migration_key).unwrap();
            assert_eq!(from_file, from_save);
            assert_eq!(from_file[..4], [0, 1, 0, 0x22]);
        }

        #[test]
        fn aes128_hex_key_file() {
            let key = key::key_from_hex(fixture!("key-hex128"), KeySize::Aes128).unwrap();
            check(
                fixture!("aes128-hex.permall"),
                fixture!("aes128-hex.save"),
                &key,
                None,
            );
        }

        #[test]
        fn aes128_pbkdf2_passphrase() {
            let key = passphrase_key(Kdf::Pbkdf2, KeySize::Aes128);
            check(
                fixture!("aes128-pbkdf2.permall"),
                fixture!("aes128-pbkdf2.save"),
                &key,
                None,
            );
        }

        #[test]
        fn aes256_sha512_passphrase() {
            let key = passphrase_key(Kdf::Sha512, KeySize::Aes256);
            check(
                fixture!("aes256-sha512.permall"),
                fixture!("aes256-sha512.save"),
                &key,
                None,
            );
            // The other KDF, or the other key size, does not open it.
            let wrong = passphrase_key(Kdf::Pbkdf2, KeySize::Aes256);
            let err = unwrap_stored(fixture!("aes256-sha512.permall"), Some(&wrong)).unwrap_err();
            assert_eq!(err.result_code(), 0x21);
            let short = passphrase_key(Kdf::Sha512, KeySize::Aes128);
            let err = unwrap_stored(fixture!("aes256-sha512.permall"), Some(&short)).unwrap_err();
            assert_eq!(err.result_code(), 0x28);
        }

        #[test]
        fn aes256_binary_key_and_256_bit_migration_key() {
            let key = key::key_from_binary(fixture!("key-bin256"), KeySize::Aes256).unwrap();
            let migration = passphrase_key(Kdf::Pbkdf2, KeySize::Aes256);
            let save = fixture!("aes256-binary-migration256.save");
            check(
                fixture!("aes256-binary-migration256.permall"),
                save,
                &key,
                Some(&migration),
            );
            assert_eq!(
                unwrap_migration(save, false, None, None),
                Err(BlobError::KeyNotFound(KeyRole::Migration))
            );
            // What we write for the same keys has swtpm's flags and sizes.
            let state =
                unwrap_stored(fixture!("aes256-binary-migration256.permall"), Some(&key)).unwrap();
            let ours = wrap_stored(&state, Some(&key), &mut ivs()).unwrap();
            assert_eq!(
                ours.len(),
                fixture!("aes256-binary-migration256.permall").len()
            );
            assert_eq!(
                ours[..10],
                fixture!("aes256-binary-migration256.permall")[..10]
            );
            let ours = wrap_migration(&state, None, Some(&migration), &mut ivs()).unwrap();
            assert_eq!(ours.len(), save.len());
            assert_eq!(ours[..10], save[..10]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678u32;
        let keys = [None, Some(key128()), Some(key256())];
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as u8
        };
        for len in 0..400 {
            let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            // Make many of them pass the header checks, to reach the layers.
            if len >= HEADER_LEN && next() % 2 == 0 {
                bytes[..4].copy_from_slice(&[1 + next() % 2, 1, 0, 10]);
                bytes[6..10].copy_from_slice(&(len as u32).to_be_bytes());
            }
            for key in &keys {
                let _ = unwrap_stored(&bytes, key.as_ref());
                for other in &keys {
                    let _ = unwrap_migration(&bytes, next() % 2 == 0, key.as_ref(), other.as_ref());
                }
            }
            let _ = is_empty_blob(&bytes);
        }
    }
}
