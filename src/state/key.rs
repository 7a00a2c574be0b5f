//! AES keys for state encryption (`--key`) and migration blobs (`--migration-key`), made
//! from the bytes a key file, key fd or passphrase gave (state-format.md §4.4). Pure: the
//! daemon reads the bytes; this module turns them into a key or says, in swtpm's words,
//! what is wrong with them.
//!
//! Key bytes are wiped from memory when a key is dropped.

use std::fmt;

use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The salt swtpm uses for PBKDF2 (5 ASCII bytes, no NUL).
const PBKDF2_SALT: &[u8] = b"swtpm";
const PBKDF2_ITERATIONS: u32 = 1000;

/// The AES variant, chosen by `mode=` and, when reading, by the blob's header flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySize {
    Aes128,
    Aes256,
}

impl KeySize {
    pub fn bytes(self) -> usize {
        match self {
            KeySize::Aes128 => 16,
            KeySize::Aes256 => 32,
        }
    }

    pub fn bits(self) -> usize {
        self.bytes() * 8
    }
}

/// `format=` of a key file or key fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// Optional `0x`, then 32 or 64 hex digits up to white space or the end.
    Hex,
    /// The bytes themselves.
    Binary,
}

/// `kdf=`: how a passphrase becomes a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC-SHA512, salt "swtpm", 1000 iterations.
    Pbkdf2,
    /// The first 16 or 32 bytes of SHA-512(passphrase).
    Sha512,
}

/// An AES-128 or AES-256 key. Its bytes never show in `Debug` output and are wiped
/// when it is dropped; it cannot be cloned, so there is one copy to wipe.
pub struct AesKey {
    material: KeyMaterial,
}

/// The key bytes, typed by size so that the ciphers take them without a length check.
/// Wiped when dropped.
pub enum KeyMaterial {
    Aes128([u8; 16]),
    Aes256([u8; 32]),
}

impl AesKey {
    /// A key of exactly 16 or 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<AesKey> {
        let material = if let Ok(bytes) = <[u8; 16]>::try_from(bytes) {
            KeyMaterial::Aes128(bytes)
        } else {
            KeyMaterial::Aes256(<[u8; 32]>::try_from(bytes).ok()?)
        };
        Some(AesKey { material })
    }

    pub fn size(&self) -> KeySize {
        match self.material {
            KeyMaterial::Aes128(_) => KeySize::Aes128,
            KeyMaterial::Aes256(_) => KeySize::Aes256,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.material {
            KeyMaterial::Aes128(bytes) => bytes,
            KeyMaterial::Aes256(bytes) => bytes,
        }
    }

    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        match self {
            KeyMaterial::Aes128(bytes) => bytes.zeroize(),
            KeyMaterial::Aes256(bytes) => bytes.zeroize(),
        }
    }
}

impl ZeroizeOnDrop for KeyMaterial {}
impl ZeroizeOnDrop for AesKey {}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AesKey({} bit)", self.size().bits())
    }
}

/// Why key material was refused; the texts are swtpm's (cli.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Could not parse key hex string into {buffer} byte buffer.")]
    HexSyntax { buffer: usize },
    #[error("Unsupported key length with {0} digits.")]
    HexDigits(usize),
    #[error("The provided key is too short. Got {got} bytes, need {need}.")]
    TooShort { got: usize, need: usize },
    #[error("Key is larger than buffer ({got} > {max}).")]
    BinaryTooLong { got: usize, max: usize },
    /// swtpm accepts such a key and fails when it first encrypts; refusing it at start
    /// keeps a daemon from running with state it cannot write.
    #[error("A binary key must be 16 or 32 bytes long, but it has {0} bytes.")]
    BinaryLength(usize),
}

/// A key from the text of a hex key file: optional `0x`, then exactly 32 (AES-128) or 64
/// (AES-256) hex digits, ended by white space or the end of the text. `size` is `mode=`:
/// the digits must not give a longer key than it, nor a shorter one.
pub fn key_from_hex(text: &[u8], size: KeySize) -> Result<AesKey, KeyError> {
    let text = text.strip_prefix(b"0x").unwrap_or(text);
    let digits_len = text
        .iter()
        // C's isspace, which swtpm uses, also counts the vertical tab.
        .position(|byte| byte.is_ascii_whitespace() || *byte == 0x0b)
        .unwrap_or(text.len());
    let digits = &text[..digits_len];
    let syntax = KeyError::HexSyntax {
        buffer: size.bytes(),
    };
    if digits.is_empty() || !digits.len().is_multiple_of(2) || digits.len() > 2 * size.bytes() {
        return Err(syntax);
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    for (at, pair) in digits.chunks_exact(2).enumerate() {
        let (Some(high), Some(low)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return Err(syntax);
        };
        bytes[at] = high << 4 | low;
    }
    let key =
        AesKey::from_bytes(&bytes[..digits.len() / 2]).ok_or(KeyError::HexDigits(digits.len()))?;
    if key.size().bytes() < size.bytes() {
        return Err(KeyError::TooShort {
            got: key.size().bytes(),
            need: size.bytes(),
        });
    }
    Ok(key)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|value| value as u8)
}

/// A key from a binary key file: its bytes, at most `size` of them. A 16-byte key with
/// `mode=aes-256-cbc` is an AES-128 key, as in swtpm.
pub fn key_from_binary(bytes: &[u8], size: KeySize) -> Result<AesKey, KeyError> {
    if bytes.len() > size.bytes() {
        return Err(KeyError::BinaryTooLong {
            got: bytes.len(),
            max: size.bytes(),
        });
    }
    AesKey::from_bytes(bytes).ok_or(KeyError::BinaryLength(bytes.len()))
}

/// A key of `size` derived from a passphrase (all its bytes, a trailing newline too).
pub fn key_from_passphrase(passphrase: &[u8], kdf: Kdf, size: KeySize) -> AesKey {
    let material = match size {
        KeySize::Aes128 => KeyMaterial::Aes128(derive(passphrase, kdf)),
        KeySize::Aes256 => KeyMaterial::Aes256(derive(passphrase, kdf)),
    };
    AesKey { material }
}

fn derive<const N: usize>(passphrase: &[u8], kdf: Kdf) -> [u8; N] {
    let mut key = [0u8; N];
    match kdf {
        Kdf::Pbkdf2 => {
            pbkdf2::pbkdf2_hmac::<Sha512>(passphrase, PBKDF2_SALT, PBKDF2_ITERATIONS, &mut key);
        }
        Kdf::Sha512 => {
            let mut digest = Sha512::digest(passphrase);
            for (key_byte, digest_byte) in key.iter_mut().zip(digest.iter()) {
                *key_byte = *digest_byte;
            }
            digest.as_mut_slice().zeroize();
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_128: &[u8] = b"0123456789abcdef0123456789ABCDEF";
    const BYTES_128: [u8; 16] = [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];

    fn hex(text: &str, size: KeySize) -> Result<Vec<u8>, KeyError> {
        key_from_hex(text.as_bytes(), size).map(|key| key.bytes().to_vec())
    }

    #[test]
    fn hex_keys_in_swtpms_syntax() {
        let text = std::str::from_utf8(HEX_128).unwrap();
        for accepted in [
            text.to_owned(),
            format!("{text}\n"),
            format!("0x{text}"),
            format!("{text}\tignored text"),
            format!("{text}\r\n"),
        ] {
            assert_eq!(
                hex(&accepted, KeySize::Aes128).unwrap(),
                BYTES_128,
                "{accepted:?}"
            );
        }
        let long = format!("0x{text}{text}\n");
        let key = key_from_hex(long.as_bytes(), KeySize::Aes256).unwrap();
        assert_eq!(key.size(), KeySize::Aes256);
        assert_eq!(key.bytes(), [BYTES_128, BYTES_128].concat());
    }

    #[test]
    fn hex_errors_as_swtpm_words_them() {
        // Each case and message as swtpm 0.7.1 answered it.
        let d = "0123456789abcdef".repeat(5);
        let syntax16 = Err(KeyError::HexSyntax { buffer: 16 });
        let syntax32 = Err(KeyError::HexSyntax { buffer: 32 });
        for (text, aes128, aes256) in [
            (&d[..31], syntax16.clone(), syntax32.clone()),
            (&d[..33], syntax16.clone(), syntax32.clone()),
            (&d[..34], syntax16.clone(), Err(KeyError::HexDigits(34))),
            (&d[..62], syntax16.clone(), Err(KeyError::HexDigits(62))),
            (&d[..66], syntax16.clone(), syntax32.clone()),
            (
                &d[..2],
                Err(KeyError::HexDigits(2)),
                Err(KeyError::HexDigits(2)),
            ),
            (
                &d[..30],
                Err(KeyError::HexDigits(30)),
                Err(KeyError::HexDigits(30)),
            ),
            (&d[..64], syntax16.clone(), Ok(())),
            ("", syntax16.clone(), syntax32.clone()),
            ("0x", syntax16.clone(), syntax32.clone()),
            ("\n", syntax16.clone(), syntax32.clone()),
            (
                &format!(" {}", &d[..32]),
                syntax16.clone(),
                syntax32.clone(),
            ),
            (
                &format!("{}garbage", &d[..32]),
                syntax16.clone(),
                syntax32.clone(),
            ),
            (
                "0123456789abcdef0123456789abcdeg",
                syntax16.clone(),
                syntax32.clone(),
            ),
        ] {
            assert_eq!(hex(text, KeySize::Aes128).map(|_| ()), aes128, "{text:?}");
            assert_eq!(hex(text, KeySize::Aes256).map(|_| ()), aes256, "{text:?}");
        }
        assert_eq!(
            hex(&d[..32], KeySize::Aes256),
            Err(KeyError::TooShort { got: 16, need: 32 })
        );
        assert_eq!(
            KeyError::TooShort { got: 16, need: 32 }.to_string(),
            "The provided key is too short. Got 16 bytes, need 32."
        );
        assert_eq!(
            KeyError::HexSyntax { buffer: 16 }.to_string(),
            "Could not parse key hex string into 16 byte buffer."
        );
        assert_eq!(
            KeyError::HexDigits(34).to_string(),
            "Unsupported key length with 34 digits."
        );
    }

    #[test]
    fn binary_keys() {
        let key = key_from_binary(&[7; 16], KeySize::Aes128).unwrap();
        assert_eq!((key.size(), key.bytes()), (KeySize::Aes128, &[7; 16][..]));
        let key = key_from_binary(&[7; 32], KeySize::Aes256).unwrap();
        assert_eq!(key.size(), KeySize::Aes256);
        // A 16-byte key with mode=aes-256-cbc is used as AES-128, as swtpm does.
        assert_eq!(
            key_from_binary(&[7; 16], KeySize::Aes256).unwrap().size(),
            KeySize::Aes128
        );
        assert_eq!(
            key_from_binary(&[7; 17], KeySize::Aes128).unwrap_err(),
            KeyError::BinaryTooLong { got: 17, max: 16 }
        );
        assert_eq!(
            KeyError::BinaryTooLong { got: 67, max: 32 }.to_string(),
            "Key is larger than buffer (67 > 32)."
        );
        for len in [0, 1, 15, 20, 31] {
            assert_eq!(
                key_from_binary(&vec![1; len], KeySize::Aes256).unwrap_err(),
                KeyError::BinaryLength(len)
            );
        }
    }

    #[test]
    fn passphrase_keys_have_the_modes_size() {
        for kdf in [Kdf::Pbkdf2, Kdf::Sha512] {
            let short = key_from_passphrase(b"secret\n", kdf, KeySize::Aes128);
            let long = key_from_passphrase(b"secret\n", kdf, KeySize::Aes256);
            assert_eq!(short.bytes().len(), 16);
            assert_eq!(long.bytes().len(), 32);
            // Both KDFs give a prefix-stable output: the 128-bit key starts the 256-bit one.
            assert_eq!(short.bytes(), &long.bytes()[..16]);
            assert_ne!(
                key_from_passphrase(b"secret", kdf, KeySize::Aes128).bytes(),
                short.bytes(),
                "the newline is part of the passphrase"
            );
        }
        assert_eq!(
            key_from_passphrase(b"x", Kdf::Sha512, KeySize::Aes256).bytes(),
            &Sha512::digest(b"x")[..32]
        );
        assert_ne!(
            key_from_passphrase(b"x", Kdf::Sha512, KeySize::Aes256).bytes(),
            key_from_passphrase(b"x", Kdf::Pbkdf2, KeySize::Aes256).bytes()
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = AesKey::from_bytes(&[0xAB; 16]).unwrap();
        assert_eq!(format!("{key:?}"), "AesKey(128 bit)");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    b"0123456789abcdefxX \n\t"[seed as usize % 21]
                })
                .collect();
            for size in [KeySize::Aes128, KeySize::Aes256] {
                let _ = key_from_hex(&bytes, size);
                let _ = key_from_binary(&bytes, size);
            }
        }
    }
}
