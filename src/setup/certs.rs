//! Getting EK and platform certificates for the keys swtpm_setup created: from the
//! built-in local CA (`crate::localca`), or from the external program that
//! `create_certs_tool` in swtpm_setup.conf names, called the way swtpm_setup calls its
//! certificate tools (manufacturing.md §2.1), so existing deployments keep working.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::localca::config::{CertOptions, ConfigError, LocalCaConfig};
use crate::localca::profile::{
    self, CertificateKind, PublicKey, TpmCertificateRequest, TpmGeneration, TpmIdentity,
    TpmSpecification, Validity,
};
use crate::localca::store::{CaError, LocalCa, current_user};

use super::SetupLog;

/// What the TPM says about itself (CMD_GET_INFO 0x03), which the certificates carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmInfo {
    pub specification: TpmSpecification,
    pub identity: TpmIdentity,
}

impl TpmInfo {
    /// From `{"TPMSpecification":{"family","level","revision"},"TPMAttributes":
    /// {"manufacturer","version","model"}}`.
    pub fn from_json(value: &serde_json::Value) -> Option<TpmInfo> {
        let spec = value.get("TPMSpecification")?;
        let attributes = value.get("TPMAttributes")?;
        let text = |v: &serde_json::Value, key: &str| v.get(key)?.as_str().map(str::to_string);
        let number = |key: &str| u32::try_from(spec.get(key)?.as_u64()?).ok();
        Some(TpmInfo {
            specification: TpmSpecification {
                family: text(spec, "family")?,
                level: number("level")?,
                revision: number("revision")?,
            },
            identity: TpmIdentity {
                manufacturer: text(attributes, "manufacturer")?,
                model: text(attributes, "model")?,
                version: text(attributes, "version")?,
            },
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertType {
    Ek,
    Platform,
}

impl CertType {
    fn name(self) -> &'static str {
        match self {
            CertType::Ek => "ek",
            CertType::Platform => "platform",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            CertType::Ek => "EK certificate",
            CertType::Platform => "platform certificate",
        }
    }
}

/// One certificate to make.
pub struct CertInput<'a> {
    pub cert_type: CertType,
    pub key: &'a PublicKey,
    pub tpm2: bool,
    pub info: &'a TpmInfo,
    pub vmid: Option<&'a str>,
    pub allow_signing: bool,
    pub decryption: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read the local CA's {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the local CA cannot issue the {what}")]
    Ca {
        what: &'static str,
        #[source]
        source: CaError,
    },
    #[error("a platform certificate needs --platform-manufacturer, --platform-model and --platform-version in the CA's options file {}", path.as_deref().map_or_else(|| "(none was found)".to_string(), |p| p.display().to_string()))]
    PlatformValues { path: Option<PathBuf> },
    #[error("the certificate tool {} is not an executable file, nor found in PATH", tool.display())]
    ToolNotFound { tool: PathBuf },
    #[error("cannot run the certificate tool {}", tool.display())]
    ToolSpawn {
        tool: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{tool} exited with {status}: {stderr}")]
    ToolFailed {
        tool: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("the certificate tool left no {} (it must write the certificate there)", path.display())]
    ToolOutput {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("user {user} cannot create the temporary directory {} for the certificate tool", path.display())]
    TempDir {
        path: PathBuf,
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("the {0} does not fit into the TPM's NV space")]
    TooLarge(&'static str),
}

/// Who makes the certificates.
pub enum CertificateMaker {
    Builtin(Box<BuiltinCa>),
    External(ExternalTool),
}

pub struct BuiltinCa {
    ca: LocalCa,
    options: CertOptions,
    options_path: Option<PathBuf>,
}

pub struct ExternalTool {
    pub tool: PathBuf,
    pub config: Option<PathBuf>,
    pub options: Option<PathBuf>,
    pub logfile: Option<PathBuf>,
}

impl BuiltinCa {
    /// The CA of `config_path` with the options file `options_path` (which may be
    /// absent: then platform certificates cannot be made).
    pub fn open(
        config_path: &Path,
        options_path: Option<&Path>,
        log: &mut SetupLog,
    ) -> Result<BuiltinCa, CertError> {
        let text = fs::read_to_string(config_path).map_err(|source| CertError::Read {
            what: "configuration file",
            path: config_path.to_path_buf(),
            source,
        })?;
        let conf = crate::conffile::ConfFile::parse(&text, |name| std::env::var(name).ok());
        let config = LocalCaConfig::from_conf(config_path, &conf)?;
        let options = match options_path {
            Some(path) => {
                CertOptions::parse(&fs::read_to_string(path).map_err(|source| CertError::Read {
                    what: "options file",
                    path: path.to_path_buf(),
                    source,
                })?)
            }
            None => CertOptions::default(),
        };
        let ca = LocalCa::new(config).map_err(|source| CertError::Ca {
            what: "certificates",
            source,
        })?;
        if !options.ignored.is_empty() {
            log.info(&format!(
                "The built-in CA ignores these options of {}: {}",
                options_path.unwrap_or(Path::new("?")).display(),
                options.ignored.join(" ")
            ));
        }
        Ok(BuiltinCa {
            ca,
            options,
            options_path: options_path.map(Path::to_path_buf),
        })
    }

    fn make(&self, input: &CertInput, log: &mut SetupLog) -> Result<Vec<u8>, CertError> {
        if !self.options.ignored.is_empty() {
            log.info(&format!(
                "The built-in CA ignores these options of {}: {}",
                self.options_path
                    .as_deref()
                    .unwrap_or(Path::new("?"))
                    .display(),
                self.options.ignored.join(" ")
            ));
        }
        let kind = match input.cert_type {
            CertType::Ek => CertificateKind::Ek {
                specification: input.info.specification.clone(),
                allow_signing: input.allow_signing,
                decryption: input.decryption,
            },
            CertType::Platform => {
                CertificateKind::Platform(self.options.platform().ok_or_else(|| {
                    CertError::PlatformValues {
                        path: self.options_path.clone(),
                    }
                })?)
            }
        };
        let generation = if input.tpm2 {
            TpmGeneration::Tpm2
        } else {
            TpmGeneration::Tpm12
        };
        let request = TpmCertificateRequest {
            generation,
            kind,
            key: input.key.clone(),
            common_name: common_name_of(input.vmid),
            tpm: input.info.identity.clone(),
            serial: Vec::new(),
            validity: Validity {
                not_before: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
                not_after: None,
            },
        };
        let issued = self
            .ca
            .issue(request, &mut |message| log.info(message))
            .map_err(|source| CertError::Ca {
                what: input.cert_type.description(),
                source,
            })?;
        log.info(&format!(
            "The local CA issued the {} with serial number {}.",
            input.cert_type.description(),
            issued.serial
        ));
        if input.tpm2 {
            Ok(issued.der)
        } else {
            profile::tpm12_nv_blob(&issued.der)
                .ok_or(CertError::TooLarge(input.cert_type.description()))
        }
    }
}

/// The subject CN for a VM id: `,` and unescaped `+` become `_` (they would separate
/// DN attributes), `\+` stays a plus; `unknown` without a VM id.
pub fn common_name_of(vmid: Option<&str>) -> String {
    let Some(vmid) = vmid else {
        return "unknown".into();
    };
    let mut out = String::with_capacity(vmid.len());
    let mut chars = vmid.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' | '+' => out.push('_'),
            '\\' if chars.peek() == Some(&'+') => {
                out.push('+');
                chars.next();
            }
            other => out.push(other),
        }
    }
    out
}

/// The `--ek` parameter of certificate tools: RSA modulus in hex, or
/// `x=<hex>,y=<hex>,id=<curve>`.
pub fn key_parameter(key: &PublicKey) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match key {
        PublicKey::Rsa { modulus, .. } => hex(modulus),
        PublicKey::Ecc { curve, x, y } => format!("x={},y={},id={}", hex(x), hex(y), curve.name()),
    }
}

impl ExternalTool {
    fn make(&self, input: &CertInput, log: &mut SetupLog) -> Result<Vec<u8>, CertError> {
        let tool = resolve_tool(&self.tool)?;
        let dir = TempDir::create()?;
        let mut args: Vec<String> = vec![
            "--type".into(),
            input.cert_type.name().into(),
            "--ek".into(),
            key_parameter(input.key),
            "--dir".into(),
            dir.path.display().to_string(),
        ];
        if let Some(logfile) = &self.logfile {
            args.extend(["--logfile".into(), logfile.display().to_string()]);
        }
        if let Some(vmid) = input.vmid {
            args.extend(["--vmid".into(), vmid.to_string()]);
        }
        let spec = &input.info.specification;
        let identity = &input.info.identity;
        args.extend([
            "--tpm-spec-family".into(),
            spec.family.clone(),
            "--tpm-spec-level".into(),
            spec.level.to_string(),
            "--tpm-spec-revision".into(),
            spec.revision.to_string(),
            "--tpm-manufacturer".into(),
            identity.manufacturer.clone(),
            "--tpm-model".into(),
            identity.model.clone(),
            "--tpm-version".into(),
            identity.version.clone(),
        ]);
        if input.tpm2 {
            args.push("--tpm2".into());
        }
        if let Some(config) = &self.config {
            args.extend(["--configfile".into(), config.display().to_string()]);
        }
        if let Some(options) = &self.options {
            args.extend(["--optsfile".into(), options.display().to_string()]);
        }
        log.info(&format!("  Invoking {} {}", tool.display(), args.join(" ")));
        let output =
            Command::new(&tool)
                .args(&args)
                .output()
                .map_err(|source| CertError::ToolSpawn {
                    tool: tool.clone(),
                    source,
                })?;
        let name = tool.file_name().map_or_else(
            || tool.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for line in String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            log.info(&format!("{name}: {line}"));
        }
        if !output.status.success() {
            return Err(CertError::ToolFailed {
                tool: name,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let file = dir.path.join(format!("{}.cert", input.cert_type.name()));
        fs::read(&file).map_err(|source| CertError::ToolOutput { path: file, source })
    }
}

/// The tool as configured: a path, or a name looked up in PATH.
pub fn resolve_tool(tool: &Path) -> Result<PathBuf, CertError> {
    if tool.components().count() > 1 {
        return if tool.is_file() {
            Ok(tool.to_path_buf())
        } else {
            Err(CertError::ToolNotFound {
                tool: tool.to_path_buf(),
            })
        };
    }
    super::daemon::find_in_path(&tool.to_string_lossy()).ok_or_else(|| CertError::ToolNotFound {
        tool: tool.to_path_buf(),
    })
}

/// `$TMPDIR/swtpm_setup.certs.<random>`, mode 0700, removed with its contents on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create() -> Result<TempDir, CertError> {
        let base = std::env::temp_dir();
        let mut last_err = None;
        for _ in 0..16 {
            let path = base.join(format!(
                "swtpm_setup.certs.{}",
                super::daemon::random_suffix()
            ));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
                Err(source) => {
                    return Err(CertError::TempDir {
                        path,
                        user: current_user(),
                        source,
                    });
                }
            }
        }
        Err(CertError::TempDir {
            path: base,
            user: current_user(),
            source: last_err.unwrap_or_else(|| io::ErrorKind::AlreadyExists.into()),
        })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

impl CertificateMaker {
    /// The certificate as it goes into NV: DER for a TPM 2, DER with the TCG header
    /// for a TPM 1.2.
    pub fn make(&self, input: &CertInput, log: &mut SetupLog) -> Result<Vec<u8>, CertError> {
        match self {
            CertificateMaker::Builtin(ca) => ca.make(input, log),
            CertificateMaker::External(tool) => tool.make(input, log),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localca::profile::EccCurve;

    #[test]
    fn vmids_become_common_names() {
        assert_eq!(common_name_of(None), "unknown");
        assert_eq!(common_name_of(Some("vm,one+two")), "vm_one_two");
        assert_eq!(common_name_of(Some("a\\+b")), "a+b");
        assert_eq!(common_name_of(Some("vm1:0d7a")), "vm1:0d7a");
    }

    #[test]
    fn key_parameters() {
        let rsa = PublicKey::Rsa {
            modulus: vec![0xAB, 0x01],
            exponent: 65537,
        };
        assert_eq!(key_parameter(&rsa), "ab01");
        let ecc = PublicKey::Ecc {
            curve: EccCurve::P384,
            x: vec![1],
            y: vec![0xFF],
        };
        assert_eq!(key_parameter(&ecc), "x=01,y=ff,id=secp384r1");
    }

    #[test]
    fn tpm_info_from_get_info() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"TPMSpecification":{"family":"2.0","level":0,"revision":164},"TPMAttributes":{"manufacturer":"id:00001014","version":"id:20191023","model":"swtpm"}}"#,
        )
        .unwrap();
        let info = TpmInfo::from_json(&json).unwrap();
        assert_eq!(info.specification.revision, 164);
        assert_eq!(info.identity.version, "id:20191023");
        assert_eq!(TpmInfo::from_json(&serde_json::json!({})), None);
    }
}
