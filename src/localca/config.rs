//! The local CA's configuration (`swtpm-localca.conf`) and its options file
//! (`swtpm-localca.options`), read the way swtpm_localca reads them
//! (manufacturing.md §2.2), so that existing CA directories keep working unchanged.

use std::path::{Path, PathBuf};

use crate::conffile::ConfFile;

use super::profile::PlatformIdentity;

/// Where the CA's signing key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKeyLocation {
    /// A PEM file; created with the rest of the CA when missing.
    File(PathBuf),
    /// `pkcs11:…` or `tpmkey:…`: keys in tokens or TPM 1.2 chips, which this CA cannot use.
    Unsupported(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCaConfig {
    /// The file this came from, for messages.
    pub source: PathBuf,
    pub statedir: PathBuf,
    pub signing_key: SigningKeyLocation,
    pub issuer_cert: PathBuf,
    pub cert_serial: PathBuf,
    pub signing_key_password: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: the mandatory entry '{key}' is missing")]
    Missing { file: PathBuf, key: &'static str },
}

impl LocalCaConfig {
    pub fn from_conf(source: &Path, conf: &ConfFile) -> Result<LocalCaConfig, ConfigError> {
        let required = |key: &'static str| {
            conf.get(key)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| ConfigError::Missing {
                    file: source.to_path_buf(),
                    key,
                })
        };
        let statedir = PathBuf::from(required("statedir")?);
        let signing_key = match required("signingkey")? {
            uri if uri.starts_with("pkcs11:") || uri.starts_with("tpmkey:") => {
                SigningKeyLocation::Unsupported(uri.to_string())
            }
            path => SigningKeyLocation::File(PathBuf::from(path)),
        };
        let issuer_cert = PathBuf::from(required("issuercert")?);
        let cert_serial = conf
            .get("certserial")
            .filter(|value| !value.is_empty())
            .map_or_else(|| statedir.join("certserial"), PathBuf::from);
        Ok(LocalCaConfig {
            source: source.to_path_buf(),
            statedir,
            signing_key,
            issuer_cert,
            cert_serial,
            signing_key_password: conf.get("signingkey_password").map(str::to_string),
        })
    }
}

/// What the options file may say about the certificates (swtpm_cert options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertOptions {
    pub platform_manufacturer: Option<String>,
    pub platform_model: Option<String>,
    pub platform_version: Option<String>,
    /// Options this CA does not know, reported to the user instead of silently dropped.
    pub ignored: Vec<String>,
}

impl CertOptions {
    /// Parses the whitespace-separated tokens of an options file.
    pub fn parse(text: &str) -> CertOptions {
        let mut options = CertOptions::default();
        let mut tokens = text.split_whitespace().peekable();
        while let Some(token) = tokens.next() {
            // swtpm_cert accepts long options with one dash too.
            let name = token.trim_start_matches('-');
            let slot = match name {
                "platform-manufacturer" => &mut options.platform_manufacturer,
                "platform-model" => &mut options.platform_model,
                "platform-version" => &mut options.platform_version,
                _ => {
                    options.ignored.push(token.to_string());
                    // Its value, if any, goes with it.
                    if tokens.peek().is_some_and(|next| !next.starts_with('-')) {
                        tokens.next();
                    }
                    continue;
                }
            };
            *slot = tokens.next().map(str::to_string);
        }
        options
    }

    /// All three platform values, or `None` when one is missing.
    pub fn platform(&self) -> Option<PlatformIdentity> {
        Some(PlatformIdentity {
            manufacturer: self.platform_manufacturer.clone()?,
            model: self.platform_model.clone()?,
            version: self.platform_version.clone()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> ConfFile {
        ConfFile::parse(text, |_| None)
    }

    #[test]
    fn shipped_configuration() {
        let config = LocalCaConfig::from_conf(
            Path::new("/etc/swtpm-localca.conf"),
            &conf("statedir = /var/lib/swtpm-localca\nsigningkey = /var/lib/swtpm-localca/signkey.pem\nissuercert = /var/lib/swtpm-localca/issuercert.pem\n"),
        )
        .unwrap();
        assert_eq!(
            config.cert_serial,
            PathBuf::from("/var/lib/swtpm-localca/certserial")
        );
        assert_eq!(
            config.signing_key,
            SigningKeyLocation::File("/var/lib/swtpm-localca/signkey.pem".into())
        );
        assert_eq!(config.signing_key_password, None);
    }

    #[test]
    fn missing_entries_are_named() {
        let err = LocalCaConfig::from_conf(Path::new("/c"), &conf("statedir = /x\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/c: the mandatory entry 'signingkey' is missing"
        );
    }

    #[test]
    fn pkcs11_keys_are_recognised() {
        let config = LocalCaConfig::from_conf(
            Path::new("/c"),
            &conf("statedir = /x\nsigningkey = pkcs11:token=a\\;b\nissuercert = /x/i.pem\nsigningkey_password = pw\n"),
        )
        .unwrap();
        assert!(matches!(
            config.signing_key,
            SigningKeyLocation::Unsupported(_)
        ));
        assert_eq!(config.signing_key_password.as_deref(), Some("pw"));
    }

    #[test]
    fn options_file() {
        let options = CertOptions::parse(
            "--platform-manufacturer Fedora\n--platform-version 2.1\n-platform-model QEMU\n--pem\n--days 10\n",
        );
        assert_eq!(
            options.platform(),
            Some(PlatformIdentity {
                manufacturer: "Fedora".into(),
                model: "QEMU".into(),
                version: "2.1".into()
            })
        );
        assert_eq!(options.ignored, ["--pem", "--days"]);
        assert_eq!(CertOptions::parse("--platform-model").platform(), None);
    }
}
