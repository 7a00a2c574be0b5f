//! swtpm's encryption of state (state-format.md §4): AES-CBC with swtpm's own padding,
//! then HMAC-SHA256 over ciphertext and IV (encrypt-then-MAC), and the legacy
//! version-1 form (zero IV, SHA-256 of the plaintext in front, no HMAC). Pure: the
//! caller supplies the IVs.

use aes::cipher::{Array, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::key::{AesKey, KeyMaterial};

const HMAC_LEN: usize = 32;
const AES_BLOCK: usize = 16;
const SHA256_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Where IVs come from: the kernel's random generator in the daemon, fixed bytes in tests.
pub trait IvSource {
    fn fill(&mut self, iv: &mut [u8]) -> Result<(), CryptoError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("its HMAC does not match: wrong key or tampered data")]
    IntegrityCheckFailed,
    #[error("its HMAC record has {0} bytes, fewer than 32")]
    HmacTooShort(usize),
    #[error("its IV has {0} bytes, fewer than 16")]
    IvTooShort(usize),
    #[error("its ciphertext of {len} bytes is not a whole number of blocks of a {bits}-bit key")]
    CiphertextLength { len: usize, bits: usize },
    #[error("its padding is not valid after decryption: wrong key or tampered data")]
    BadPadding,
    #[error("its SHA-256 does not match after decryption: wrong key or tampered data")]
    DigestMismatch,
    #[error("no random IV could be had: {0}")]
    Random(String),
}

/// What encryption produces: the three values of the encrypted-data, HMAC and IV records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub hmac: [u8; HMAC_LEN],
    pub iv: Vec<u8>,
}

/// Encrypts `plaintext` under a fresh IV as long as the key (swtpm's layout; AES uses its
/// first 16 bytes) and authenticates ciphertext and IV.
pub fn seal(key: &AesKey, plaintext: &[u8], ivs: &mut dyn IvSource) -> Result<Sealed, CryptoError> {
    let mut iv = vec![0u8; key.size().bytes()];
    ivs.fill(&mut iv)?;
    let iv_block = first_block(&iv).ok_or(CryptoError::IvTooShort(iv.len()))?;
    let ciphertext = encrypt(key, &iv_block, plaintext);
    let hmac = mac(key, &ciphertext, Some(&iv))
        .finalize()
        .into_bytes()
        .into();
    Ok(Sealed {
        ciphertext,
        hmac,
        iv,
    })
}

/// Checks the HMAC (over ciphertext and, when there is one, the whole IV record), then
/// decrypts. Only the first 32 bytes of a longer HMAC record count, and an IV record of
/// at least 16 bytes is accepted whatever the key size (swtpm's development branch writes
/// 32-byte IVs for 128-bit keys after it used a 256-bit key); a missing IV means zeros.
pub fn open(
    key: &AesKey,
    ciphertext: &[u8],
    hmac: &[u8],
    iv: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    let tag = hmac
        .get(..HMAC_LEN)
        .ok_or(CryptoError::HmacTooShort(hmac.len()))?;
    let iv_block = match iv {
        Some(iv) => first_block(iv).ok_or(CryptoError::IvTooShort(iv.len()))?,
        None => [0; AES_BLOCK],
    };
    mac(key, ciphertext, iv)
        .verify_slice(tag)
        .map_err(|_| CryptoError::IntegrityCheckFailed)?;
    decrypt(key, &iv_block, ciphertext)
}

/// The legacy (header version 1) form: zero IV, plaintext = SHA-256(data) || data.
pub fn open_legacy(key: &AesKey, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let plaintext = decrypt(key, &[0; AES_BLOCK], ciphertext)?;
    let Some((digest, data)) = plaintext.split_at_checked(SHA256_LEN) else {
        return Err(CryptoError::DigestMismatch);
    };
    if Sha256::digest(data).as_slice() != digest {
        return Err(CryptoError::DigestMismatch);
    }
    Ok(data.to_vec())
}

fn first_block(iv: &[u8]) -> Option<[u8; AES_BLOCK]> {
    iv.first_chunk().copied()
}

fn mac(key: &AesKey, ciphertext: &[u8], iv: Option<&[u8]>) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key.bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(ciphertext);
    if let Some(iv) = iv {
        mac.update(iv);
    }
    mac
}

/// swtpm pads to a multiple of the *key* length, not of the AES block: 1 to keylen bytes,
/// each holding the pad length (so AES-256 data gets up to 32 bytes of padding).
fn encrypt(key: &AesKey, iv: &[u8; AES_BLOCK], plaintext: &[u8]) -> Vec<u8> {
    let granularity = key.size().bytes();
    let pad = granularity - plaintext.len() % granularity;
    let mut buffer = Vec::with_capacity(plaintext.len() + pad);
    buffer.extend_from_slice(plaintext);
    buffer.resize(plaintext.len() + pad, pad as u8);
    // The padded length is a multiple of 16, so every byte is in a whole block.
    encrypt_blocks(key, iv, &mut buffer);
    buffer
}

/// AES-CBC over the whole 16-byte blocks of `buffer`, in place.
fn encrypt_blocks(key: &AesKey, iv: &[u8; AES_BLOCK], buffer: &mut [u8]) {
    let (blocks, _) = Array::slice_as_chunks_mut(buffer);
    match key.material() {
        KeyMaterial::Aes128(bytes) => {
            cbc::Encryptor::<aes::Aes128>::new(bytes.into(), iv.into()).encrypt_blocks(blocks)
        }
        KeyMaterial::Aes256(bytes) => {
            cbc::Encryptor::<aes::Aes256>::new(bytes.into(), iv.into()).encrypt_blocks(blocks)
        }
    }
}

/// Decrypts and removes swtpm's padding. The reader accepts any pad length from 1 to the
/// key length, so also 16-byte PKCS#7 padding under a 256-bit key (as swtpm does).
fn decrypt(key: &AesKey, iv: &[u8; AES_BLOCK], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let granularity = key.size().bytes();
    if !ciphertext.len().is_multiple_of(AES_BLOCK) || ciphertext.len() < granularity {
        return Err(CryptoError::CiphertextLength {
            len: ciphertext.len(),
            bits: key.size().bits(),
        });
    }
    let mut buffer = ciphertext.to_vec();
    let (blocks, _) = Array::slice_as_chunks_mut(&mut buffer);
    match key.material() {
        KeyMaterial::Aes128(bytes) => {
            cbc::Decryptor::<aes::Aes128>::new(bytes.into(), iv.into()).decrypt_blocks(blocks)
        }
        KeyMaterial::Aes256(bytes) => {
            cbc::Decryptor::<aes::Aes256>::new(bytes.into(), iv.into()).decrypt_blocks(blocks)
        }
    }
    let pad = usize::from(buffer.last().copied().unwrap_or(0));
    let Some(pad_start) = buffer.len().checked_sub(pad) else {
        return Err(CryptoError::BadPadding);
    };
    if pad == 0 || pad > granularity || buffer[pad_start..].iter().any(|&b| usize::from(b) != pad) {
        return Err(CryptoError::BadPadding);
    }
    buffer.truncate(pad_start);
    Ok(buffer)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// IVs from a counter, for repeatable tests.
    pub struct CountingIvs(pub u8);

    impl IvSource for CountingIvs {
        fn fill(&mut self, iv: &mut [u8]) -> Result<(), CryptoError> {
            for byte in iv.iter_mut() {
                *byte = self.0;
                self.0 = self.0.wrapping_add(1);
            }
            Ok(())
        }
    }

    fn key128() -> AesKey {
        AesKey::from_bytes(&[0x11; 16]).unwrap()
    }

    fn key256() -> AesKey {
        AesKey::from_bytes(&[0x22; 32]).unwrap()
    }

    #[test]
    fn round_trips_with_iv_as_long_as_the_key() {
        for key in [key128(), key256()] {
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 1000] {
                let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let sealed = seal(&key, &plaintext, &mut CountingIvs(0)).unwrap();
                assert_eq!(sealed.iv.len(), key.size().bytes());
                let opened = open(&key, &sealed.ciphertext, &sealed.hmac, Some(&sealed.iv));
                assert_eq!(opened.unwrap(), plaintext);
            }
        }
    }

    #[test]
    fn padding_granularity_is_the_key_length() {
        // state-format.md §4.1: 1354 plaintext bytes give 1376 bytes under AES-256 and
        // 1360 under AES-128; aligned data gets a whole extra pad of key length.
        let sizes = |key: &AesKey, len| {
            seal(key, &vec![0; len], &mut CountingIvs(0))
                .unwrap()
                .ciphertext
                .len()
        };
        assert_eq!(sizes(&key256(), 1354), 1376);
        assert_eq!(sizes(&key128(), 1354), 1360);
        assert_eq!(sizes(&key256(), 64), 96);
        assert_eq!(sizes(&key128(), 64), 80);
    }

    #[test]
    fn every_encryption_gets_its_own_iv() {
        let mut ivs = CountingIvs(0);
        let a = seal(&key128(), b"same", &mut ivs).unwrap();
        let b = seal(&key128(), b"same", &mut ivs).unwrap();
        assert_ne!(a.iv, b.iv);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn hmac_covers_ciphertext_and_whole_iv() {
        let key = key256();
        let sealed = seal(&key, b"secret state", &mut CountingIvs(5)).unwrap();
        let mut expected = <HmacSha256 as KeyInit>::new_from_slice(key.bytes()).unwrap();
        expected.update(&sealed.ciphertext);
        expected.update(&sealed.iv);
        assert_eq!(
            sealed.hmac,
            <[u8; 32]>::from(expected.finalize().into_bytes())
        );
    }

    #[test]
    fn wrong_key_and_tampering_fail_the_integrity_check() {
        let sealed = seal(&key128(), b"secret state", &mut CountingIvs(0)).unwrap();
        let other = AesKey::from_bytes(&[0x12; 16]).unwrap();
        let open_with =
            |key: &AesKey, ct: &[u8], hmac: &[u8], iv: &[u8]| open(key, ct, hmac, Some(iv));
        assert_eq!(
            open_with(&other, &sealed.ciphertext, &sealed.hmac, &sealed.iv),
            Err(CryptoError::IntegrityCheckFailed)
        );
        let mut ct = sealed.ciphertext.clone();
        ct[3] ^= 1;
        assert_eq!(
            open_with(&key128(), &ct, &sealed.hmac, &sealed.iv),
            Err(CryptoError::IntegrityCheckFailed)
        );
        let mut iv = sealed.iv.clone();
        iv[15] ^= 1;
        assert_eq!(
            open_with(&key128(), &sealed.ciphertext, &sealed.hmac, &iv),
            Err(CryptoError::IntegrityCheckFailed)
        );
        // Without the IV record, the HMAC must be over the ciphertext alone.
        assert_eq!(
            open(&key128(), &sealed.ciphertext, &sealed.hmac, None),
            Err(CryptoError::IntegrityCheckFailed)
        );
    }

    #[test]
    fn hmac_and_iv_records_of_odd_lengths() {
        let key = key128();
        let sealed = seal(&key, b"x", &mut CountingIvs(0)).unwrap();
        assert_eq!(
            open(
                &key,
                &sealed.ciphertext,
                &sealed.hmac[..31],
                Some(&sealed.iv)
            ),
            Err(CryptoError::HmacTooShort(31))
        );
        let longer_hmac = [&sealed.hmac[..], b"extra"].concat();
        assert_eq!(
            open(&key, &sealed.ciphertext, &longer_hmac, Some(&sealed.iv)).unwrap(),
            b"x"
        );
        assert_eq!(
            open(
                &key,
                &sealed.ciphertext,
                &sealed.hmac,
                Some(&sealed.iv[..15])
            ),
            Err(CryptoError::IvTooShort(15))
        );
        // A 32-byte IV record with a 128-bit key: AES uses its first 16 bytes, the HMAC
        // covers all 32 (what swtpm's development branch may write).
        let mut iv32 = sealed.iv.clone();
        iv32.extend_from_slice(&[0xEE; 16]);
        let tag: [u8; 32] = mac(&key, &sealed.ciphertext, Some(&iv32))
            .finalize()
            .into_bytes()
            .into();
        assert_eq!(
            open(&key, &sealed.ciphertext, &tag, Some(&iv32)).unwrap(),
            b"x"
        );
    }

    #[test]
    fn missing_iv_means_zero_iv_and_hmac_without_it() {
        let key = key256();
        let ciphertext = encrypt(&key, &[0; 16], b"old style");
        let tag: [u8; 32] = mac(&key, &ciphertext, None).finalize().into_bytes().into();
        assert_eq!(open(&key, &ciphertext, &tag, None).unwrap(), b"old style");
    }

    #[test]
    fn padding_is_checked() {
        let key = key256();
        // 16-byte PKCS#7 padding under a 256-bit key is accepted (pad ≤ key length).
        let mut ct = b"sixteen bytes!!!".to_vec();
        ct.extend_from_slice(&[16; 16]);
        encrypt_blocks(&key, &[0; 16], &mut ct);
        assert_eq!(decrypt(&key, &[0; 16], &ct).unwrap(), b"sixteen bytes!!!");
        // A pad byte of 0, or pad bytes that disagree, are refused.
        for bad_tail in [[0u8; 16], {
            let mut t = [4u8; 16];
            t[14] = 3;
            t
        }] {
            let mut ct = vec![1u8; 16];
            ct.extend_from_slice(&bad_tail);
            encrypt_blocks(&key, &[0; 16], &mut ct);
            assert_eq!(decrypt(&key, &[0; 16], &ct), Err(CryptoError::BadPadding));
        }
        assert!(matches!(
            decrypt(&key, &[0; 16], &[0; 17]),
            Err(CryptoError::CiphertextLength { len: 17, bits: 256 })
        ));
        assert!(matches!(
            decrypt(&key, &[0; 16], &[0; 16]),
            Err(CryptoError::CiphertextLength { len: 16, bits: 256 })
        ));
    }

    #[test]
    fn legacy_form() {
        let key = key128();
        let data = b"legacy libtpms state";
        let plaintext = [Sha256::digest(data).as_slice(), data].concat();
        let ciphertext = encrypt(&key, &[0; 16], &plaintext);
        assert_eq!(open_legacy(&key, &ciphertext).unwrap(), data);
        let mut wrong = plaintext.clone();
        wrong[0] ^= 1;
        assert_eq!(
            open_legacy(&key, &encrypt(&key, &[0; 16], &wrong)),
            Err(CryptoError::DigestMismatch)
        );
        assert_eq!(
            open_legacy(&key, &encrypt(&key, &[0; 16], b"short")),
            Err(CryptoError::DigestMismatch)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..2000 {
            let lens: Vec<usize> = (0..3).map(|_| next() as usize % 80).collect();
            let bytes: Vec<Vec<u8>> = lens
                .iter()
                .map(|&len| (0..len).map(|_| next() as u8).collect())
                .collect();
            for key in [key128(), key256()] {
                let _ = open(&key, &bytes[0], &bytes[1], Some(&bytes[2]));
                let _ = open(&key, &bytes[0], &bytes[1], None);
                let _ = open_legacy(&key, &bytes[0]);
                let _ = decrypt(&key, &[0; 16], &bytes[0]);
            }
        }
    }
}
