//! The CA's RSA keys: PEM in and out (PKCS#1 as GnuTLS' certtool writes it, plain or
//! password-encrypted PKCS#8), generation, signing, and key identifiers.

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use sha1::{Digest, Sha1};

use super::profile::{self, SignatureAlgorithm};

/// Size of the keys this CA generates: what certtool generates by default ("High").
pub const CA_KEY_BITS: usize = 3072;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("it holds no PEM private key (no '-----BEGIN … PRIVATE KEY-----' block)")]
    NoPemBlock,
    #[error("its PEM block is damaged: {0}")]
    Pem(pem_rfc7468::Error),
    #[error("its '{0}' key is not an RSA key; this CA signs with RSA keys only")]
    NotRsa(String),
    #[error(
        "it is encrypted; set signingkey_password in the CA's configuration (or SWTPM_ROOTCA_PASSWORD for the root key)"
    )]
    NeedsPassword,
    #[error("it cannot be decrypted or decoded (wrong password?): {0}")]
    Decode(String),
    #[error("generating an RSA key failed: {0}")]
    Generate(rsa::Error),
    #[error("encoding the key failed: {0}")]
    Encode(String),
    #[error("signing failed: {0}")]
    Sign(rsa::Error),
}

/// An RSA private key of the CA.
pub struct CaKey(rsa::PrivateKey);

impl CaKey {
    pub fn generate() -> Result<CaKey, KeyError> {
        rsa::PrivateKey::new(&mut getrandom::SysRng, CA_KEY_BITS)
            .map(CaKey)
            .map_err(KeyError::Generate)
    }

    /// Reads the first private-key PEM block of `text`; text around it (certtool puts a
    /// human-readable dump before the block) is ignored.
    pub fn from_pem(text: &str, password: Option<&str>) -> Result<CaKey, KeyError> {
        let block = first_private_key_block(text).ok_or(KeyError::NoPemBlock)?;
        let (label, der) = pem_rfc7468::decode_vec(block.as_bytes()).map_err(KeyError::Pem)?;
        let key = match label {
            "RSA PRIVATE KEY" => rsa::PrivateKey::from_pkcs1_der(&der)
                .map_err(|err| KeyError::Decode(err.to_string()))?,
            "PRIVATE KEY" => {
                let info = rsa::pkcs8::PrivateKeyInfoRef::try_from(der.as_slice())
                    .map_err(|err| KeyError::Decode(err.to_string()))?;
                if info.algorithm.oid != profile::oids::RSA_ENCRYPTION {
                    return Err(KeyError::NotRsa(format!(
                        "PRIVATE KEY ({})",
                        info.algorithm.oid
                    )));
                }
                rsa::PrivateKey::from_pkcs8_der(&der)
                    .map_err(|err| KeyError::Decode(err.to_string()))?
            }
            "ENCRYPTED PRIVATE KEY" => {
                let password = password.ok_or(KeyError::NeedsPassword)?;
                rsa::PrivateKey::from_pkcs8_encrypted_der(&der, password)
                    .map_err(|err| KeyError::Decode(err.to_string()))?
            }
            other => return Err(KeyError::NotRsa(other.to_string())),
        };
        Ok(CaKey(key))
    }

    /// PKCS#8 PEM, encrypted (PBES2, AES-256-CBC, PBKDF2-SHA256) when a password is given.
    pub fn to_pem(&self, password: Option<&str>) -> Result<String, KeyError> {
        let encode_err = |err: rsa::pkcs8::Error| KeyError::Encode(err.to_string());
        let pem = match password {
            None => self
                .0
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(encode_err)?
                .to_string(),
            Some(password) => {
                let der = self.0.to_pkcs8_der().map_err(encode_err)?;
                let info = rsa::pkcs8::PrivateKeyInfoRef::try_from(der.as_bytes())
                    .map_err(|err| KeyError::Encode(err.to_string()))?;
                // PBKDF2-SHA256 and AES-256-CBC: what GnuTLS (swtpm_cert) and OpenSSL
                // read; the crate's default, scrypt, GnuTLS 3.7 cannot.
                let params =
                    rsa::pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2(&mut getrandom::SysRng)
                        .map_err(|err| KeyError::Encode(err.to_string()))?;
                let encrypted = info
                    .encrypt_with_params(params, password)
                    .map_err(encode_err)?;
                encrypted
                    .to_pem("ENCRYPTED PRIVATE KEY", rsa::pkcs8::LineEnding::LF)
                    .map_err(|err| KeyError::Encode(err.to_string()))?
                    .to_string()
            }
        };
        Ok(pem)
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn subject_public_key_info(&self) -> Result<Vec<u8>, KeyError> {
        self.0
            .to_public_key()
            .to_public_key_der()
            .map(|doc| doc.into_vec())
            .map_err(|err| KeyError::Encode(err.to_string()))
    }

    /// PKCS#1 v1.5 signature over `message` with the algorithm's hash.
    pub fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match algorithm {
            SignatureAlgorithm::Sha1WithRsa => self.0.pkcs1v15_sign::<Sha1>(message),
            SignatureAlgorithm::Sha256WithRsa => self.0.pkcs1v15_sign::<sha2::Sha256>(message),
        }
        .map_err(KeyError::Sign)
    }
}

/// The key identifier GnuTLS puts in the SKI of the CAs it makes: SHA-1 over the whole
/// DER SubjectPublicKeyInfo.
pub fn key_identifier(subject_public_key_info: &[u8]) -> Vec<u8> {
    Sha1::digest(subject_public_key_info).to_vec()
}

fn first_private_key_block(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")?;
    let label_end = start
        + text[start..]
            .find("-----\n")
            .or_else(|| text[start..].find("-----\r\n"))?;
    let label = &text[start + "-----BEGIN ".len()..label_end];
    let end_marker = format!("-----END {label}-----");
    let end = label_end + text[label_end..].find(&end_marker)? + end_marker.len();
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_block_after_certtools_dump() {
        let text = "Public Key Info:\n\tfoo\n-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\ntrailer";
        assert_eq!(
            first_private_key_block(text),
            Some("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----")
        );
        assert_eq!(first_private_key_block("no pem"), None);
        assert_eq!(first_private_key_block("-----BEGIN X-----\nAAAA"), None);
        assert!(matches!(
            CaKey::from_pem("nothing", None),
            Err(KeyError::NoPemBlock)
        ));
        assert!(
            CaKey::from_pem(
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                None
            )
            .is_err()
        );
    }
}
