//! Helpers for the swtpm_setup tests: private CA configurations, running vtpm's and
//! Debian's swtpm_setup, a daemon on a manufactured state for tpm2-tools, and
//! certificate facts parsed with x509-cert.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use der::{Decode, Encode};

use crate::common::process::{Finished, Process, free_port_pair, vtpm_swtpm};

pub const DEBIAN_SETUP: &str = "/usr/bin/swtpm_setup";
pub const DEBIAN_LOCALCA: &str = "/usr/bin/swtpm_localca";
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

pub fn vtpm_setup() -> PathBuf {
    env!("CARGO_BIN_EXE_swtpm_setup").into()
}

/// A private swtpm_setup.conf whose local CA lives in `<dir>/localca`.
pub struct SetupConfig {
    pub setup_conf: PathBuf,
    pub ca_dir: PathBuf,
}

impl SetupConfig {
    /// `tool` is the create_certs_tool line's value.
    pub fn write(dir: &Path, tool: &str) -> SetupConfig {
        std::fs::create_dir_all(dir).unwrap();
        let ca_dir = dir.join("localca");
        let localca_conf = dir.join("swtpm-localca.conf");
        std::fs::write(
            &localca_conf,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca_dir.display()
            ),
        )
        .unwrap();
        let options = dir.join("swtpm-localca.options");
        std::fs::write(
            &options,
            "--platform-manufacturer Fedora\n--platform-version 2.1\n--platform-model QEMU\n",
        )
        .unwrap();
        let setup_conf = dir.join("swtpm_setup.conf");
        std::fs::write(
            &setup_conf,
            format!(
                "create_certs_tool = {tool}\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                localca_conf.display(),
                options.display()
            ),
        )
        .unwrap();
        SetupConfig { setup_conf, ca_dir }
    }

    pub fn root_cert(&self) -> PathBuf {
        self.ca_dir.join("swtpm-localca-rootca-cert.pem")
    }

    pub fn issuer_cert(&self) -> PathBuf {
        self.ca_dir.join("issuercert.pem")
    }
}

/// Runs a swtpm_setup (`program`) to its end.
pub fn run_setup(program: &Path, args: &[&str], dir: &Path) -> Finished {
    Process::start(program, args, dir).finish(SETUP_TIMEOUT)
}

/// Runs a swtpm_setup and insists on success; returns its output.
pub fn setup_ok(program: &Path, args: &[&str], dir: &Path) -> Finished {
    let finished = run_setup(program, args, dir);
    assert!(
        finished.status.success(),
        "{} {args:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        program.display(),
        finished.status,
        finished.stdout,
        finished.stderr
    );
    finished
}

/// A daemon serving a manufactured state on TCP ports P (data) and P+1 (control), as
/// tpm2-tools' swtpm TCTI expects; the TPM is started.
pub struct ServedState {
    pub tcti: String,
    _daemon: Process,
}

impl ServedState {
    pub fn start(
        daemon: &Path,
        state: &Path,
        tpm2: bool,
        extra: &[&str],
        dir: &Path,
    ) -> ServedState {
        let port = free_port_pair();
        let mut args = vec![
            "socket".to_string(),
            "--tpmstate".into(),
            format!("dir={}", state.display()),
            "--server".into(),
            format!("type=tcp,port={port}"),
            "--ctrl".into(),
            format!("type=tcp,port={}", port + 1),
            "--flags".into(),
            "not-need-init,startup-clear".into(),
        ];
        if tpm2 {
            args.push("--tpm2".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(daemon, &argv, dir);
        process.wait_tcp_port(port + 1);
        ServedState {
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
            _daemon: process,
        }
    }

    pub fn vtpm(state: &Path, dir: &Path) -> ServedState {
        ServedState::start(&vtpm_swtpm(), state, true, &[], dir)
    }

    /// Runs a tpm2-tools command; returns (success, stdout, stderr).
    pub fn tool(&self, tool: &str, args: &[&str], dir: &Path) -> (bool, String, String) {
        let output = Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|err| {
                panic!("{tool}: {err} (install tpm2-tools and libtss2-tcti-swtpm0)")
            });
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub fn tool_ok(&self, tool: &str, args: &[&str], dir: &Path) -> String {
        let (ok, stdout, stderr) = self.tool(tool, args, dir);
        assert!(ok, "{tool} {args:?} failed:\n{stdout}{stderr}");
        stdout
    }

    /// `tpm2_getcap handles-nv-index` / `handles-persistent` as numbers.
    pub fn handles(&self, what: &str, dir: &Path) -> Vec<u32> {
        let mut handles: Vec<u32> = self
            .tool_ok("tpm2_getcap", &[what], dir)
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- 0x"))
            .map(|hex| u32::from_str_radix(hex.trim(), 16).unwrap())
            .collect();
        handles.sort_unstable();
        handles
    }

    /// The attributes and size `tpm2_nvreadpublic` shows for `index`.
    pub fn nv_public(&self, index: u32, dir: &Path) -> (u32, usize) {
        let text = self.tool_ok("tpm2_nvreadpublic", &[&format!("{index:#x}")], dir);
        let after = |key: &str| -> &str {
            &text[text.find(key).unwrap_or_else(|| panic!("{key} in {text}"))..]
        };
        let attributes = after("attributes:")
            .lines()
            .find_map(|l| l.trim().strip_prefix("value: 0x"))
            .map(|hex| u32::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        let size = after("size:").lines().next().unwrap()["size:".len()..]
            .trim()
            .parse()
            .unwrap();
        (attributes, size)
    }

    /// `tpm2_nvread <index> -C o`.
    pub fn nv_read(&self, index: u32, dir: &Path) -> Vec<u8> {
        let out = dir.join(format!("nv-{index:x}.bin"));
        self.tool_ok(
            "tpm2_nvread",
            &[
                &format!("{index:#x}"),
                "-C",
                "o",
                "-o",
                &out.display().to_string(),
            ],
            dir,
        );
        std::fs::read(out).unwrap()
    }
}

/// Runs openssl; returns (success, stdout+stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// `openssl verify -x509_strict` of a DER or PEM certificate against a CA chain.
pub fn verify_chain(cert: &Path, root: &Path, intermediate: &Path) {
    let der = std::fs::read(cert).unwrap();
    let pem_path = cert.with_extension("verify.pem");
    let pem = if der.starts_with(b"-----") {
        String::from_utf8(der).unwrap()
    } else {
        pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &der).unwrap()
    };
    std::fs::write(&pem_path, pem).unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        &root.display().to_string(),
        "-untrusted",
        &intermediate.display().to_string(),
        &pem_path.display().to_string(),
    ]);
    assert!(
        ok && text.contains(": OK"),
        "openssl verify {}: {text}",
        cert.display()
    );
}

/// What the tests compare between certificates.
#[derive(Debug, PartialEq, Eq)]
pub struct CertFacts {
    pub signature_algorithm: String,
    pub issuer: String,
    pub subject: String,
    pub not_after: String,
    /// Extension OIDs in order with their criticality.
    pub extensions: Vec<(String, bool)>,
    pub key_algorithm: String,
    /// RSA modulus bytes or the EC point length.
    pub key_len: usize,
}

pub fn parse_cert(der: &[u8]) -> x509_cert::Certificate {
    x509_cert::Certificate::from_der(der)
        .unwrap_or_else(|err| panic!("x509-cert cannot parse: {err}"))
}

pub fn cert_facts(der: &[u8]) -> CertFacts {
    let cert = parse_cert(der);
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    let key = spki.subject_public_key.raw_bytes();
    let key_len = if spki.algorithm.oid.to_string() == "1.2.840.113549.1.1.1" {
        let rsa = rsa::pkcs1::RsaPublicKey::<der::asn1::UintRef>::from_der(key).unwrap();
        rsa.modulus.as_bytes().len()
    } else {
        key.len()
    };
    CertFacts {
        signature_algorithm: cert.signature_algorithm().oid.to_string(),
        issuer: tbs.issuer().to_string(),
        subject: tbs.subject().to_string(),
        not_after: format!("{:?}", tbs.validity().not_after.to_date_time()),
        extensions: tbs
            .extensions()
            .into_iter()
            .flatten()
            .map(|ext| (ext.extn_id.to_string(), ext.critical))
            .collect(),
        key_algorithm: spki.algorithm.oid.to_string(),
        key_len,
    }
}

/// The DER value of the extension `oid`.
pub fn extension_value(der: &[u8], oid: &str) -> Option<Vec<u8>> {
    let cert = parse_cert(der);
    cert.tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|ext| ext.extn_id.to_string() == oid)
        .map(|ext| ext.extn_value.as_bytes().to_vec())
}

/// The subjectPublicKeyInfo DER of a certificate.
pub fn cert_spki(der: &[u8]) -> Vec<u8> {
    parse_cert(der)
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

/// The DER inside a PEM file's first block.
pub fn pem_file_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("-----BEGIN")
        .unwrap_or_else(|| panic!("no PEM in {}", path.display()));
    pem_rfc7468::decode_vec(&text.as_bytes()[start..])
        .unwrap()
        .1
}

/// The serial number of a DER certificate as bytes.
pub fn serial(der: &[u8]) -> Vec<u8> {
    parse_cert(der)
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .to_vec()
}

pub fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
