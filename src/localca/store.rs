//! The local CA on disk (manufacturing.md §2.3): its directory, lock file, serial file,
//! signing key and issuer certificate, created with a root CA on first use and reused
//! unchanged afterwards, also when another swtpm_localca made them. Every certificate is
//! issued while holding an exclusive lock on `<statedir>/.lock.swtpm-localca`, so that
//! VMs starting in parallel never get the same serial or race creating the CA.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use der::{Decode, Encode};
use nix::fcntl::{Flock, FlockArg};

use super::config::{LocalCaConfig, SigningKeyLocation};
use super::keys::{self, CaKey, KeyError};
use super::profile::{self, IssuerFacts, ProfileError, SignatureAlgorithm, TpmCertificateRequest};
use super::serial;

pub const LOCK_FILE: &str = ".lock.swtpm-localca";
pub const ROOT_KEY_FILE: &str = "swtpm-localca-rootca-privkey.pem";
pub const ROOT_CERT_FILE: &str = "swtpm-localca-rootca-cert.pem";
/// The environment variable with the password for a newly created root CA key.
pub const ROOT_PASSWORD_ENV: &str = "SWTPM_ROOTCA_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("user {user} cannot {need} {}: {cause}{}", path.display(), hint(cause, path))]
    Access {
        need: &'static str,
        path: PathBuf,
        user: String,
        cause: io::Error,
    },
    #[error("the CA's signing key {}", path.display())]
    Key { path: PathBuf, source: KeyError },
    #[error("the CA's issuer certificate {}: {reason}", path.display())]
    IssuerCert { path: PathBuf, reason: String },
    #[error("the signing key '{uri}' in {} is a PKCS#11 or TPM key, which the built-in CA cannot use, and no swtpm_localca to use it is installed; use a PEM key file or install swtpm_localca", config.display())]
    UnsupportedKey { uri: String, config: PathBuf },
    #[error("the certificate cannot be made: {0}")]
    Profile(#[from] ProfileError),
}

fn hint(cause: &io::Error, path: &Path) -> String {
    if cause.kind() != io::ErrorKind::PermissionDenied {
        return String::new();
    }
    let dir = path.parent().unwrap_or(path);
    format!(
        "; give this user read and write access to {} and the files in it (chown or chmod)",
        dir.display()
    )
}

/// The user this process runs as, for messages: `tss (uid 102)`.
pub fn current_user() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

fn access<'a>(need: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CaError + 'a {
    move |cause| CaError::Access {
        need,
        path: path.to_path_buf(),
        user: current_user(),
        cause,
    }
}

/// A certificate the CA issued.
pub struct Issued {
    pub der: Vec<u8>,
    /// The serial, in decimal as the serial file has it.
    pub serial: String,
}

/// The local CA described by a configuration file.
pub struct LocalCa {
    config: LocalCaConfig,
    signing_key: PathBuf,
}

impl LocalCa {
    pub fn new(config: LocalCaConfig) -> Result<LocalCa, CaError> {
        let signing_key = match &config.signing_key {
            SigningKeyLocation::File(path) => path.clone(),
            SigningKeyLocation::Unsupported(uri) => {
                return Err(CaError::UnsupportedKey {
                    uri: uri.clone(),
                    config: config.source.clone(),
                });
            }
        };
        Ok(LocalCa {
            config,
            signing_key,
        })
    }

    /// Issues one certificate: takes the CA lock, creates the CA if it is missing,
    /// allocates the next serial, signs. `log` gets progress messages.
    pub fn issue(
        &self,
        mut request: TpmCertificateRequest,
        log: &mut dyn FnMut(&str),
    ) -> Result<Issued, CaError> {
        self.create_directories(log)?;
        let _lock = self.lock()?;
        if !self.signing_key.exists() || !self.config.issuer_cert.exists() {
            log("Creating a root CA and the local CA's signing key and issuer certificate.");
            self.create_ca()?;
        }
        let key = self.load_signing_key()?;
        let issuer = self.load_issuer(&key)?;
        let serial = self.allocate_serial()?;
        request.serial = serial::decimal_to_bytes(&serial);
        let algorithm = request.signature_algorithm();
        let tbs = request.to_be_signed(&issuer)?;
        let signature = key.sign(algorithm, &tbs).map_err(|source| CaError::Key {
            path: self.signing_key.clone(),
            source,
        })?;
        Ok(Issued {
            der: profile::certificate(&tbs, algorithm, &signature),
            serial,
        })
    }

    /// The root CA certificate (PEM) next to the signing key, for chain verification.
    pub fn root_cert_path(&self) -> PathBuf {
        sibling(&self.signing_key, ROOT_CERT_FILE)
    }

    fn create_directories(&self, log: &mut dyn FnMut(&str)) -> Result<(), CaError> {
        let dirs = [
            Some(self.config.statedir.as_path()),
            self.signing_key.parent(),
            self.config.issuer_cert.parent(),
            self.config.cert_serial.parent(),
        ];
        for dir in dirs.into_iter().flatten() {
            if dir.as_os_str().is_empty() || dir.is_dir() {
                continue;
            }
            log(&format!(
                "Creating the local CA's directory {}.",
                dir.display()
            ));
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o770)
                .create(dir)
                .map_err(access("create the directory", dir))?;
        }
        Ok(())
    }

    fn lock(&self) -> Result<Flock<File>, CaError> {
        let path = self.config.statedir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o660)
            .open(&path)
            .map_err(access("open (read and write) the lock file", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| access("lock", &path)(io::Error::from(errno)))
    }

    /// Root key and self-signed root certificate, then the signing key and the issuer
    /// certificate signed by the root. The issuer certificate is written last: its
    /// presence means the CA is complete.
    fn create_ca(&self) -> Result<(), CaError> {
        let key_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Key { path, source }
        };
        let root_key_path = sibling(&self.signing_key, ROOT_KEY_FILE);
        let root_key = CaKey::generate().map_err(key_err(&root_key_path))?;
        let root_spki = root_key
            .subject_public_key_info()
            .map_err(key_err(&root_key_path))?;
        let root_facts = IssuerFacts {
            name: profile::common_name("swtpm-localca-rootca"),
            key_identifier: keys::key_identifier(&root_spki),
        };
        let now = unix_now();
        let root_tbs = profile::CaCertificateRequest {
            subject_common_name: "swtpm-localca-rootca",
            issuer: None,
            serial: &random_serial(),
            validity: profile::Validity {
                not_before: now,
                not_after: None,
            },
            subject_public_key_info: &root_spki,
            subject_key_identifier: &root_facts.key_identifier,
        }
        .to_be_signed();
        let root_cert = self.signed(&root_key, &root_key_path, &root_tbs)?;

        let signing_key = CaKey::generate().map_err(key_err(&self.signing_key))?;
        let signing_spki = signing_key
            .subject_public_key_info()
            .map_err(key_err(&self.signing_key))?;
        let issuer_tbs = profile::CaCertificateRequest {
            subject_common_name: "swtpm-localca",
            issuer: Some(&root_facts),
            serial: &random_serial(),
            validity: profile::Validity {
                not_before: now,
                not_after: None,
            },
            subject_public_key_info: &signing_spki,
            subject_key_identifier: &keys::key_identifier(&signing_spki),
        }
        .to_be_signed();
        let issuer_cert = self.signed(&root_key, &root_key_path, &issuer_tbs)?;

        let root_password = std::env::var(ROOT_PASSWORD_ENV).ok();
        let root_pem = root_key
            .to_pem(root_password.as_deref())
            .map_err(key_err(&root_key_path))?;
        write_file(&root_key_path, root_pem.as_bytes(), 0o640)?;
        write_file(
            &self.root_cert_path(),
            pem_certificate(&root_cert).as_bytes(),
            0o644,
        )?;
        let signing_pem = signing_key
            .to_pem(self.config.signing_key_password.as_deref())
            .map_err(key_err(&self.signing_key))?;
        write_file(&self.signing_key, signing_pem.as_bytes(), 0o640)?;
        write_file(
            &self.config.issuer_cert,
            pem_certificate(&issuer_cert).as_bytes(),
            0o644,
        )
    }

    fn signed(&self, key: &CaKey, key_path: &Path, tbs: &[u8]) -> Result<Vec<u8>, CaError> {
        let algorithm = SignatureAlgorithm::Sha256WithRsa;
        let signature = key.sign(algorithm, tbs).map_err(|source| CaError::Key {
            path: key_path.to_path_buf(),
            source,
        })?;
        Ok(profile::certificate(tbs, algorithm, &signature))
    }

    fn load_signing_key(&self) -> Result<CaKey, CaError> {
        let path = &self.signing_key;
        let text = fs::read_to_string(path).map_err(access("read the signing key", path))?;
        CaKey::from_pem(&text, self.config.signing_key_password.as_deref()).map_err(|source| {
            CaError::Key {
                path: path.clone(),
                source,
            }
        })
    }

    /// The issuer certificate's subject and key identifier, after checking that it
    /// certifies the signing key.
    fn load_issuer(&self, key: &CaKey) -> Result<IssuerFacts, CaError> {
        let path = &self.config.issuer_cert;
        let bad = |reason: String| CaError::IssuerCert {
            path: path.clone(),
            reason,
        };
        let text = fs::read(path).map_err(access("read the issuer certificate", path))?;
        let der = match pem_rfc7468::decode_vec(certificate_block(&text)) {
            Ok((_, der)) => der,
            Err(err) => return Err(bad(format!("no PEM certificate in it ({err})"))),
        };
        let cert = x509_cert::Certificate::from_der(&der).map_err(|err| bad(err.to_string()))?;
        let tbs = cert.tbs_certificate();
        let name = tbs.subject().to_der().map_err(|err| bad(err.to_string()))?;
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|err| bad(err.to_string()))?;
        let key_spki = key
            .subject_public_key_info()
            .map_err(|source| CaError::Key {
                path: self.signing_key.clone(),
                source,
            })?;
        if spki != key_spki {
            return Err(bad(format!(
                "its public key is not the one of the signing key {}",
                self.signing_key.display()
            )));
        }
        let ski = tbs
            .extensions()
            .into_iter()
            .flatten()
            .find(|ext| ext.extn_id == profile::oids::SUBJECT_KEY_IDENTIFIER)
            .ok_or_else(|| bad("it has no subjectKeyIdentifier, which the EK certificates' authorityKeyIdentifier needs".into()))?;
        let key_identifier = der::asn1::OctetString::from_der(ski.extn_value.as_bytes())
            .map_err(|err| bad(format!("its subjectKeyIdentifier is malformed: {err}")))?
            .into_bytes()
            .into_vec();
        Ok(IssuerFacts {
            name,
            key_identifier,
        })
    }

    fn allocate_serial(&self) -> Result<String, CaError> {
        let path = &self.config.cert_serial;
        let last = match fs::read(path) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(access("read the serial number file", path)(err)),
        };
        let next = serial::next_serial(last.as_deref(), || {
            let mut random = [0u8; 19];
            fill_random(&mut random);
            serial::random_start(random)
        });
        write_file(path, next.as_bytes(), 0o644)?;
        Ok(next)
    }
}

fn sibling(file: &Path, name: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new(".")).join(name)
}

fn certificate_block(text: &[u8]) -> &[u8] {
    let marker = b"-----BEGIN CERTIFICATE-----";
    text.windows(marker.len())
        .position(|w| w == marker)
        .map_or(text, |start| &text[start..])
}

fn pem_certificate(der: &[u8]) -> String {
    // Encoding a short byte string as PEM cannot fail.
    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(access("write", path))?;
    file.write_all(content).map_err(access("write", path))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// 20 random bytes, positive as a DER INTEGER (what certtool uses for CA serials).
fn random_serial() -> Vec<u8> {
    let mut serial = vec![0u8; 20];
    fill_random(&mut serial);
    serial[0] = (serial[0] & 0x7F) | 0x01;
    serial
}

fn fill_random(buf: &mut [u8]) {
    // The kernel's random source does not fail once the system has booted; if it ever
    // did, serials would only be less random, not wrong.
    let _ = getrandom::fill(buf);
}
