//! swtpm_setup's command line (cli.md §11.1), parsed into `Options`. Pure. Long options
//! may be abbreviated to any unambiguous prefix and take their value either as the next
//! argument or after `=`, as with getopt_long.

use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    Aes128Cbc,
    Aes256Cbc,
}

impl Cipher {
    /// The `mode=` value the daemon's `--key` takes.
    pub fn mode(self) -> &'static str {
        match self {
            Cipher::Aes128Cbc => "aes-128-cbc",
            Cipher::Aes256Cbc => "aes-256-cbc",
        }
    }
}

/// `--rsa-keysize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaKeySize {
    Bits(u32),
    Max,
}

/// Flags of `--create-config-files`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigFilesFlags {
    pub overwrite: bool,
    pub root: bool,
    pub skip_if_exist: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub runas: Option<String>,
    pub tpm_state: Option<String>,
    pub tpm: Option<String>,
    pub tpm2: bool,
    pub createek: bool,
    pub allow_signing: bool,
    pub decryption: bool,
    pub ecc: bool,
    pub take_ownership: bool,
    pub ownerpass: Option<String>,
    pub owner_well_known: bool,
    pub srkpass: Option<String>,
    pub srk_well_known: bool,
    pub create_ek_cert: bool,
    pub create_platform_cert: bool,
    pub create_spk: bool,
    pub lock_nvram: bool,
    pub display: bool,
    pub config: Option<PathBuf>,
    pub logfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub keyfile_fd: Option<i32>,
    pub pwdfile: Option<PathBuf>,
    pub pwdfile_fd: Option<i32>,
    pub cipher: Option<Cipher>,
    pub overwrite: bool,
    pub not_overwrite: bool,
    pub vmid: Option<String>,
    /// All `--pcr-banks` values joined with commas.
    pub pcr_banks: Option<String>,
    pub rsa_keysize: Option<RsaKeySize>,
    pub write_ek_cert_files: Option<PathBuf>,
    pub reconfigure: bool,
    /// Options accepted for compatibility that do nothing; reported as warnings.
    pub deprecated: Vec<&'static str>,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invocation {
    Help,
    Version,
    /// With the `--tpm` given, if any.
    PrintCapabilities(Option<String>),
    CreateConfigFiles(ConfigFilesFlags),
    Setup(Box<Options>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("unknown option '{0}'")]
    Unknown(String),
    #[error("option '{0}' is ambiguous")]
    Ambiguous(String),
    #[error("option '--{0}' needs a value")]
    MissingValue(&'static str),
    #[error("option '--{0}' takes no value")]
    UnexpectedValue(&'static str),
    #[error("unexpected argument '{0}'")]
    Positional(String),
    #[error("--{option}: '{value}' is not {expected}")]
    BadValue {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("--{0} needs libtpms 0.10 or later (TPM 2 profiles), which this system does not have")]
    ProfilesUnsupported(&'static str),
    #[error("--create-config-files: 'overwrite' and 'skip-if-exist' exclude each other")]
    OverwriteAndSkip,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    Flag,
    Value,
    /// `--create-config-files [flags]`: the flags may follow as the next argument.
    OptionalValue,
}

const OPTIONS: &[(&str, Arity)] = &[
    ("runas", Arity::Value),
    ("tpm-state", Arity::Value),
    ("tpmstate", Arity::Value),
    ("tpm", Arity::Value),
    ("swtpm_ioctl", Arity::Value),
    ("tpm2", Arity::Flag),
    ("createek", Arity::Flag),
    ("allow-signing", Arity::Flag),
    ("decryption", Arity::Flag),
    ("ecc", Arity::Flag),
    ("take-ownership", Arity::Flag),
    ("ownerpass", Arity::Value),
    ("owner-well-known", Arity::Flag),
    ("srkpass", Arity::Value),
    ("srk-well-known", Arity::Flag),
    ("create-ek-cert", Arity::Flag),
    ("create-platform-cert", Arity::Flag),
    ("create-spk", Arity::Flag),
    ("lock-nvram", Arity::Flag),
    ("display", Arity::Flag),
    ("config", Arity::Value),
    ("logfile", Arity::Value),
    ("keyfile", Arity::Value),
    ("keyfile-fd", Arity::Value),
    ("pwdfile", Arity::Value),
    ("pwdfile-fd", Arity::Value),
    ("cipher", Arity::Value),
    ("overwrite", Arity::Flag),
    ("not-overwrite", Arity::Flag),
    ("vmid", Arity::Value),
    ("pcr-banks", Arity::Value),
    ("rsa-keysize", Arity::Value),
    ("write-ek-cert-files", Arity::Value),
    ("tcsd-system-ps-file", Arity::Value),
    ("print-capabilities", Arity::Flag),
    ("create-config-files", Arity::OptionalValue),
    ("reconfigure", Arity::Flag),
    ("profile", Arity::Value),
    ("profile-name", Arity::Value),
    ("profile-file", Arity::Value),
    ("profile-file-fd", Arity::Value),
    ("profile-remove-disabled", Arity::Value),
    ("print-profiles", Arity::Flag),
    ("version", Arity::Flag),
    ("help", Arity::Flag),
];

fn lookup(name: &str) -> Result<(&'static str, Arity), UsageError> {
    if let Some(exact) = OPTIONS.iter().find(|(option, _)| *option == name) {
        return Ok(*exact);
    }
    let mut matches = OPTIONS
        .iter()
        .filter(|(option, _)| option.starts_with(name));
    match (matches.next(), matches.next()) {
        (Some(only), None) if !name.is_empty() => Ok(*only),
        (Some(_), Some(_)) => Err(UsageError::Ambiguous(format!("--{name}"))),
        _ => Err(UsageError::Unknown(format!("--{name}"))),
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut options = Options::default();
    let mut print_capabilities = false;
    let mut config_files: Option<ConfigFilesFlags> = None;
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        if arg == "-h" {
            return Ok(Invocation::Help);
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(if arg.starts_with('-') {
                UsageError::Unknown(arg.clone())
            } else {
                UsageError::Positional(arg.clone())
            });
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let (name, arity) = lookup(name)?;
        let value = match arity {
            Arity::Flag => {
                if inline.is_some() {
                    return Err(UsageError::UnexpectedValue(name));
                }
                None
            }
            Arity::Value => Some(match inline {
                Some(value) => value,
                None => rest.next().cloned().ok_or(UsageError::MissingValue(name))?,
            }),
            Arity::OptionalValue => {
                inline.or_else(|| rest.next_if(|next| !next.starts_with("--")).cloned())
            }
        };
        let text = value.clone().unwrap_or_default();
        match name {
            "help" => return Ok(Invocation::Help),
            "version" => return Ok(Invocation::Version),
            "print-capabilities" => print_capabilities = true,
            "create-config-files" => config_files = Some(config_files_flags(value.as_deref())?),
            "profile"
            | "profile-name"
            | "profile-file"
            | "profile-file-fd"
            | "profile-remove-disabled"
            | "print-profiles" => {
                return Err(UsageError::ProfilesUnsupported(name));
            }
            "runas" => options.runas = Some(text),
            "tpm-state" | "tpmstate" => options.tpm_state = Some(text),
            "tpm" => options.tpm = Some(text),
            "swtpm_ioctl" => options.deprecated.push("--swtpm_ioctl"),
            "tcsd-system-ps-file" => options.deprecated.push("--tcsd-system-ps-file"),
            "tpm2" => options.tpm2 = true,
            "createek" => options.createek = true,
            "allow-signing" => options.allow_signing = true,
            "decryption" => options.decryption = true,
            "ecc" => options.ecc = true,
            "take-ownership" => options.take_ownership = true,
            "ownerpass" => options.ownerpass = Some(text),
            "owner-well-known" => options.owner_well_known = true,
            "srkpass" => options.srkpass = Some(text),
            "srk-well-known" => options.srk_well_known = true,
            "create-ek-cert" => options.create_ek_cert = true,
            "create-platform-cert" => options.create_platform_cert = true,
            "create-spk" => options.create_spk = true,
            "lock-nvram" => options.lock_nvram = true,
            "display" => options.display = true,
            "config" => options.config = Some(text.into()),
            "logfile" => options.logfile = Some(text.into()),
            "keyfile" => options.keyfile = Some(text.into()),
            "keyfile-fd" => options.keyfile_fd = Some(fd_number("keyfile-fd", &text)?),
            "pwdfile" => options.pwdfile = Some(text.into()),
            "pwdfile-fd" => options.pwdfile_fd = Some(fd_number("pwdfile-fd", &text)?),
            "cipher" => {
                options.cipher = Some(match text.as_str() {
                    "aes-128-cbc" | "aes-cbc" => Cipher::Aes128Cbc,
                    "aes-256-cbc" => Cipher::Aes256Cbc,
                    _ => {
                        return Err(UsageError::BadValue {
                            option: "cipher",
                            value: text,
                            expected: "aes-128-cbc, aes-cbc or aes-256-cbc",
                        });
                    }
                })
            }
            "overwrite" => options.overwrite = true,
            "not-overwrite" => options.not_overwrite = true,
            "vmid" => options.vmid = Some(text),
            "pcr-banks" => {
                options.pcr_banks = Some(match options.pcr_banks.take() {
                    Some(before) => format!("{before},{text}"),
                    None => text,
                })
            }
            "rsa-keysize" => options.rsa_keysize = Some(rsa_keysize(&text)?),
            "write-ek-cert-files" => options.write_ek_cert_files = Some(text.into()),
            "reconfigure" => options.reconfigure = true,
            _ => return Err(UsageError::Unknown(format!("--{name}"))),
        }
    }
    if let Some(flags) = config_files {
        return Ok(Invocation::CreateConfigFiles(flags));
    }
    if print_capabilities {
        return Ok(Invocation::PrintCapabilities(options.tpm));
    }
    Ok(Invocation::Setup(Box::new(options)))
}

pub fn rsa_keysize(text: &str) -> Result<RsaKeySize, UsageError> {
    if text == "max" {
        return Ok(RsaKeySize::Max);
    }
    text.parse()
        .map(RsaKeySize::Bits)
        .map_err(|_| UsageError::BadValue {
            option: "rsa-keysize",
            value: text.to_string(),
            expected: "a number of bits or 'max'",
        })
}

fn fd_number(option: &'static str, text: &str) -> Result<i32, UsageError> {
    text.parse::<i32>()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| UsageError::BadValue {
            option,
            value: text.to_string(),
            expected: "a file descriptor number",
        })
}

fn config_files_flags(value: Option<&str>) -> Result<ConfigFilesFlags, UsageError> {
    let mut flags = ConfigFilesFlags::default();
    for word in value.unwrap_or("").split(',').filter(|w| !w.is_empty()) {
        match word {
            "overwrite" => flags.overwrite = true,
            "root" => flags.root = true,
            "skip-if-exist" => flags.skip_if_exist = true,
            _ => {
                return Err(UsageError::BadValue {
                    option: "create-config-files",
                    value: word.to_string(),
                    expected: "overwrite, root or skip-if-exist",
                });
            }
        }
    }
    if flags.overwrite && flags.skip_if_exist {
        return Err(UsageError::OverwriteAndSkip);
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn setup(args: &[&str]) -> Options {
        match parse_strs(args).unwrap() {
            Invocation::Setup(options) => *options,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn libvirt_first_start() {
        let options = setup(&[
            "--tpm2",
            "--pwdfile-fd",
            "12",
            "--cipher",
            "aes-256-cbc",
            "--tpm-state",
            "/s",
            "--vmid",
            "vm:uuid",
            "--logfile",
            "/l",
            "--createek",
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
            "--not-overwrite",
        ]);
        assert!(options.tpm2 && options.createek && options.lock_nvram && options.not_overwrite);
        assert_eq!(options.pwdfile_fd, Some(12));
        assert_eq!(options.cipher, Some(Cipher::Aes256Cbc));
        assert_eq!(options.tpm_state.as_deref(), Some("/s"));
    }

    #[test]
    fn values_inline_abbreviated_and_repeated() {
        let options = setup(&[
            "--tpmstate=/s",
            "--pcr-banks",
            "sha1",
            "--pcr-banks=sha256",
            "--rsa-key",
            "max",
            "--create-pl",
        ]);
        assert_eq!(options.pcr_banks.as_deref(), Some("sha1,sha256"));
        assert_eq!(options.rsa_keysize, Some(RsaKeySize::Max));
        assert!(options.create_platform_cert);
        assert_eq!(
            parse_strs(&["--create"]),
            Err(UsageError::Ambiguous("--create".into()))
        );
        assert_eq!(
            parse_strs(&["--bogus"]),
            Err(UsageError::Unknown("--bogus".into()))
        );
        assert_eq!(
            parse_strs(&["--tpm2=1"]),
            Err(UsageError::UnexpectedValue("tpm2"))
        );
        assert_eq!(
            parse_strs(&["--vmid"]),
            Err(UsageError::MissingValue("vmid"))
        );
        assert_eq!(parse_strs(&["x"]), Err(UsageError::Positional("x".into())));
    }

    #[test]
    fn create_config_files_flags() {
        assert_eq!(
            parse_strs(&["--create-config-files", "skip-if-exist"]),
            Ok(Invocation::CreateConfigFiles(ConfigFilesFlags {
                skip_if_exist: true,
                ..Default::default()
            }))
        );
        assert_eq!(
            parse_strs(&["--create-config-files", "--tpm2"]),
            Ok(Invocation::CreateConfigFiles(ConfigFilesFlags::default()))
        );
        assert_eq!(
            parse_strs(&["--create-config-files=overwrite,skip-if-exist"]),
            Err(UsageError::OverwriteAndSkip)
        );
    }

    #[test]
    fn profiles_are_refused() {
        assert_eq!(
            parse_strs(&["--profile-name", "default-v1"]),
            Err(UsageError::ProfilesUnsupported("profile-name"))
        );
        assert_eq!(
            parse_strs(&["--print-profiles"]),
            Err(UsageError::ProfilesUnsupported("print-profiles"))
        );
    }

    #[test]
    fn special_invocations() {
        assert_eq!(parse_strs(&["--tpm2", "--help"]), Ok(Invocation::Help));
        assert_eq!(parse_strs(&["-h"]), Ok(Invocation::Help));
        assert_eq!(parse_strs(&["--version"]), Ok(Invocation::Version));
        assert!(matches!(
            parse_strs(&["--print-capabilities"]),
            Ok(Invocation::PrintCapabilities(_))
        ));
        assert!(matches!(
            parse_strs(&["--keyfile-fd", "-3"]),
            Err(UsageError::BadValue {
                option: "keyfile-fd",
                ..
            })
        ));
    }
}
