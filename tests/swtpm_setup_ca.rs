//! The built-in local CA: its certificates are byte for byte what swtpm_cert makes from
//! the same inputs; parallel swtpm_setup runs (vtpm's and Debian's) against one CA
//! directory get distinct serials that all verify; CA directories, also with password-
//! protected keys, work in both directions between vtpm and swtpm_localca; an external
//! create_certs_tool is still run; failures remove the state and say why.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod setup_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use setup_support::*;
use vtpm::conffile::ConfFile;
use vtpm::localca::config::LocalCaConfig;
use vtpm::localca::profile::{
    CertificateKind, EccCurve, PlatformIdentity, PublicKey, TpmCertificateRequest, TpmGeneration,
    TpmIdentity, TpmSpecification, Validity,
};
use vtpm::localca::store::LocalCa;

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DER certificate with the notBefore UTCTime zeroed: the only field (besides the
/// signature over it) that depends on the second it was made in.
fn tbs_without_time(der: &[u8]) -> Vec<u8> {
    let cert = parse_cert(der);
    let tbs = der::Encode::to_der(cert.tbs_certificate()).unwrap();
    let at = tbs
        .windows(2)
        .position(|w| w == [0x17, 0x0D])
        .expect("notBefore is a UTCTime");
    let mut normalised = tbs.clone();
    normalised[at + 2..at + 15].fill(b'0');
    normalised
}

fn decimal(bytes: &[u8]) -> String {
    let value = bytes.iter().fold(0u128, |acc, b| acc << 8 | u128::from(*b));
    value.to_string()
}

#[test]
fn certificates_equal_swtpm_certs_byte_for_byte() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let ca_dir = dir.join("ca");
    let conf_path = dir.join("swtpm-localca.conf");
    let conf_text = format!(
        "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\nsigningkey_password = s3cret\n",
        ca = ca_dir.display()
    );
    std::fs::write(&conf_path, &conf_text).unwrap();
    let config =
        LocalCaConfig::from_conf(&conf_path, &ConfFile::parse(&conf_text, |_| None)).unwrap();
    let ca = LocalCa::new(config).unwrap();

    let rsa_modulus = {
        let mut m = vec![0xC3u8; 256];
        m[255] = 0x35;
        m
    };
    let ecc = ([0x11u8; 48], [0x22u8; 48]);
    let tpm2_id = TpmIdentity {
        manufacturer: "id:00001014".into(),
        model: "swtpm".into(),
        version: "id:20191023".into(),
    };
    let platform = PlatformIdentity {
        manufacturer: "Fedora".into(),
        model: "QEMU".into(),
        version: "2.1".into(),
    };
    struct Case {
        name: &'static str,
        generation: TpmGeneration,
        kind: CertificateKind,
        key: PublicKey,
        flags: Vec<&'static str>,
    }
    let ek = |family: &str, level, revision, signing, decryption| CertificateKind::Ek {
        specification: TpmSpecification {
            family: family.into(),
            level,
            revision,
        },
        allow_signing: signing,
        decryption,
    };
    let rsa = PublicKey::Rsa {
        modulus: rsa_modulus.clone(),
        exponent: 65537,
    };
    let ecc_key = PublicKey::Ecc {
        curve: EccCurve::P384,
        x: ecc.0.to_vec(),
        y: ecc.1.to_vec(),
    };
    let cases = [
        Case {
            name: "tpm2-rsa-ek",
            generation: TpmGeneration::Tpm2,
            kind: ek("2.0", 0, 164, false, false),
            key: rsa.clone(),
            flags: vec![],
        },
        Case {
            name: "tpm2-ecc-ek",
            generation: TpmGeneration::Tpm2,
            kind: ek("2.0", 0, 164, false, false),
            key: ecc_key.clone(),
            flags: vec![],
        },
        Case {
            name: "tpm2-rsa-signing-ek",
            generation: TpmGeneration::Tpm2,
            kind: ek("2.0", 0, 164, true, true),
            key: rsa.clone(),
            flags: vec!["--allow-signing", "--decryption"],
        },
        Case {
            name: "tpm2-ecc-signing-ek",
            generation: TpmGeneration::Tpm2,
            kind: ek("2.0", 0, 164, true, false),
            key: ecc_key.clone(),
            flags: vec!["--allow-signing"],
        },
        Case {
            name: "tpm2-platform",
            generation: TpmGeneration::Tpm2,
            kind: CertificateKind::Platform(platform.clone()),
            key: rsa.clone(),
            flags: vec![],
        },
        Case {
            name: "tpm12-ek",
            generation: TpmGeneration::Tpm12,
            kind: ek("1.2", 2, 116, false, false),
            key: rsa.clone(),
            flags: vec![],
        },
        Case {
            name: "tpm12-platform",
            generation: TpmGeneration::Tpm12,
            kind: CertificateKind::Platform(platform.clone()),
            key: rsa.clone(),
            flags: vec![],
        },
    ];
    for case in cases {
        let mut identity = tpm2_id.clone();
        if case.generation == TpmGeneration::Tpm12 {
            identity.version = "id:00740001".into();
        }
        let request = TpmCertificateRequest {
            generation: case.generation,
            kind: case.kind.clone(),
            key: case.key.clone(),
            common_name: "vm_one:2".into(),
            tpm: identity.clone(),
            serial: Vec::new(),
            validity: Validity {
                not_before: 1_795_000_000,
                not_after: None,
            },
        };
        let ours = ca.issue(request, &mut |_| {}).unwrap().der;
        let theirs_path = dir.join(format!("{}.swtpm_cert", case.name));
        let mut command = Command::new("swtpm_cert");
        command.args([
            "--signkey",
            &path_str(&ca_dir.join("signkey.pem")),
            "--signkey-pwd",
            "pass:s3cret",
            "--issuercert",
            &path_str(&ca_dir.join("issuercert.pem")),
            "--out-cert",
            &path_str(&theirs_path),
            "--tpm-manufacturer",
            &identity.manufacturer,
            "--tpm-model",
            &identity.model,
            "--tpm-version",
            &identity.version,
            "--days",
            "-1",
            "--serial",
            &decimal(&serial(&ours)),
        ]);
        if case.generation == TpmGeneration::Tpm2 {
            command.args(["--tpm2", "--subject", "CN=vm_one:2"]);
        } else {
            command.arg("--add-header");
        }
        match &case.kind {
            CertificateKind::Ek { specification, .. } => {
                command.args([
                    "--tpm-spec-family",
                    &specification.family,
                    "--tpm-spec-level",
                    &specification.level.to_string(),
                    "--tpm-spec-revision",
                    &specification.revision.to_string(),
                ]);
            }
            CertificateKind::Platform(p) => {
                command.args([
                    "--type",
                    "platform",
                    "--platform-manufacturer",
                    &p.manufacturer,
                    "--platform-model",
                    &p.model,
                    "--platform-version",
                    &p.version,
                ]);
            }
        }
        match &case.key {
            PublicKey::Rsa { modulus, .. } => {
                command.args(["--modulus", &hex_string(modulus)]);
            }
            PublicKey::Ecc { x, y, .. } => {
                command.args([
                    "--ecc-x",
                    &hex_string(x),
                    "--ecc-y",
                    &hex_string(y),
                    "--ecc-curveid",
                    "secp384r1",
                ]);
            }
        }
        command.args(&case.flags);
        let output = command
            .output()
            .expect("run swtpm_cert (apt-get install swtpm-tools)");
        assert!(
            output.status.success(),
            "{}: swtpm_cert: {}",
            case.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let theirs = std::fs::read(&theirs_path).unwrap();
        let theirs = if case.generation == TpmGeneration::Tpm12 {
            let der = vtpm::localca::profile::strip_tpm12_header(&theirs)
                .expect("swtpm_cert's TCG header");
            assert_eq!(
                vtpm::localca::profile::tpm12_nv_blob(der).unwrap(),
                theirs,
                "{}: same header",
                case.name
            );
            der.to_vec()
        } else {
            theirs
        };
        assert_eq!(
            hex_string(&tbs_without_time(&ours)),
            hex_string(&tbs_without_time(&theirs)),
            "{}: vtpm's certificate (left) and swtpm_cert's (right)",
            case.name
        );
        assert_eq!(
            parse_cert(&ours).signature_algorithm(),
            parse_cert(&theirs).signature_algorithm()
        );
    }
}

fn tpm2_ek_cert_args<'a>(state: &'a str, config: &'a str, certs: &'a str) -> Vec<&'a str> {
    vec![
        "--tpm2",
        "--tpm-state",
        state,
        "--create-ek-cert",
        "--config",
        config,
        "--write-ek-cert-files",
        certs,
        "--pcr-banks",
        "-",
    ]
}

#[test]
fn parallel_runs_against_one_ca_get_distinct_serials() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let config = SetupConfig::write(dir, "/usr/bin/swtpm_localca");
    let config_s = path_str(&config.setup_conf);
    let tpm = format!("{} socket", common::process::vtpm_swtpm().display());
    // Four of vtpm's and two of Debian's at once, all on a CA that does not exist yet.
    let runs: Vec<(std::path::PathBuf, common::process::Process)> = (0..6)
        .map(|n| {
            let state = dir.join(format!("state{n}"));
            std::fs::create_dir(&state).unwrap();
            let program: std::path::PathBuf = if n < 4 {
                vtpm_setup()
            } else {
                DEBIAN_SETUP.into()
            };
            let (state_s, certs_s) = (path_str(&state), path_str(&state));
            let mut args = tpm2_ek_cert_args(&state_s, &config_s, &certs_s);
            args.extend(["--tpm", &tpm]);
            let process = common::process::Process::start(&program, &args, dir);
            (state, process)
        })
        .collect();
    let mut serials = Vec::new();
    for (state, process) in runs {
        let finished = process.finish(SETUP_TIMEOUT);
        assert!(
            finished.status.success(),
            "{}: {}{}",
            state.display(),
            finished.stdout,
            finished.stderr
        );
        for name in ["ek-rsa2048.crt", "ek-secp384r1.crt"] {
            let cert = state.join(name);
            verify_chain(&cert, &config.root_cert(), &config.issuer_cert());
            serials.push(serial(&std::fs::read(&cert).unwrap()));
        }
    }
    let mut distinct = serials.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 12, "serials: {serials:?}");
    let last: String = std::fs::read_to_string(config.ca_dir.join("certserial")).unwrap();
    assert_eq!(
        decimal(distinct.last().unwrap()),
        last.trim(),
        "certserial holds the last serial"
    );
    assert!(config.ca_dir.join(".lock.swtpm-localca").exists());
}

#[test]
fn ca_directories_with_passwords_work_both_ways_with_swtpm_localca() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let tpm = format!("{} socket", common::process::vtpm_swtpm().display());
    // Made by vtpm, then used by Debian's swtpm_localca; made by Debian's, used by vtpm.
    for (first, second) in [
        (vtpm_setup(), std::path::PathBuf::from(DEBIAN_SETUP)),
        (DEBIAN_SETUP.into(), vtpm_setup()),
    ] {
        let sub = dir.join(format!(
            "ca-by-{}",
            if first == vtpm_setup() {
                "vtpm"
            } else {
                "debian"
            }
        ));
        std::fs::create_dir(&sub).unwrap();
        let config = SetupConfig::write(&sub, "/usr/bin/swtpm_localca");
        let localca_conf = sub.join("swtpm-localca.conf");
        let mut text = std::fs::read_to_string(&localca_conf).unwrap();
        text.push_str("signingkey_password = sign-pw\n");
        std::fs::write(&localca_conf, text).unwrap();
        let config_s = path_str(&config.setup_conf);
        for (n, program) in [&first, &second].into_iter().enumerate() {
            let state = sub.join(format!("state{n}"));
            std::fs::create_dir(&state).unwrap();
            let state_s = path_str(&state);
            let mut args = tpm2_ek_cert_args(&state_s, &config_s, &state_s);
            args.extend(["--tpm", &tpm]);
            let finished = common::process::Process::start_with(
                Command::new(program)
                    .args(&args)
                    .env("SWTPM_ROOTCA_PASSWORD", "root-pw"),
                &sub,
            )
            .finish(SETUP_TIMEOUT);
            assert!(
                finished.status.success(),
                "{}: {}{}",
                program.display(),
                finished.stdout,
                finished.stderr
            );
            verify_chain(
                &state.join("ek-rsa2048.crt"),
                &config.root_cert(),
                &config.issuer_cert(),
            );
        }
        let signkey = std::fs::read_to_string(config.ca_dir.join("signkey.pem")).unwrap();
        assert!(
            signkey.contains("ENCRYPTED PRIVATE KEY"),
            "the signing key is password-protected"
        );
    }
}

#[test]
fn external_certificate_tool_and_failures() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let tpm = format!("{} socket", common::process::vtpm_swtpm().display());

    // A tool that is not swtpm_localca is run as swtpm_setup runs its tools.
    let tool = dir.join("site-cert-tool");
    std::fs::write(
        &tool,
        format!("#!/bin/sh\necho issuing \"$2\"\nexec {DEBIAN_LOCALCA} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = SetupConfig::write(dir, &path_str(&tool));
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let (state_s, config_s) = (path_str(&state), path_str(&config.setup_conf));
    let mut args = tpm2_ek_cert_args(&state_s, &config_s, &state_s);
    args.extend(["--tpm", &tpm, "--create-platform-cert"]);
    let run = setup_ok(&vtpm_setup(), &args, dir);
    assert!(
        run.stdout.contains("Invoking") && run.stdout.contains("site-cert-tool: issuing platform"),
        "{}",
        run.stdout
    );
    verify_chain(
        &state.join("ek-secp384r1.crt"),
        &config.root_cert(),
        &config.issuer_cert(),
    );

    // A failing tool: exit 1, the reason, and no state left behind.
    let failing = SetupConfig::write(&dir.join("x"), "/bin/false");
    let state2 = dir.join("state2");
    std::fs::create_dir(&state2).unwrap();
    let state2_s = path_str(&state2);
    let failing_s = path_str(&failing.setup_conf);
    let mut args = tpm2_ek_cert_args(&state2_s, &failing_s, &state2_s);
    args.extend(["--tpm", &tpm]);
    let run = run_setup(&vtpm_setup(), &args, dir);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("false exited with exit status: 1"),
        "{}",
        run.stderr
    );
    assert!(
        !state2.join("tpm2-00.permall").exists(),
        "the partial state is removed"
    );

    // The built-in CA without platform values in its options file.
    let no_platform = SetupConfig::write(&dir.join("y"), "swtpm_localca");
    std::fs::write(
        dir.join("y/swtpm-localca.options"),
        "--platform-model QEMU\n",
    )
    .unwrap();
    let no_platform_s = path_str(&no_platform.setup_conf);
    let mut args = tpm2_ek_cert_args(&state2_s, &no_platform_s, &state2_s);
    args.extend(["--tpm", &tpm, "--create-platform-cert"]);
    let run = run_setup(&vtpm_setup(), &args, dir);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("--platform-manufacturer")
            && run.stderr.contains("swtpm-localca.options"),
        "{}",
        run.stderr
    );
    assert!(!state2.join("tpm2-00.permall").exists());

    // A CA key in a PKCS#11 token: the installed swtpm_localca is asked to use it; with
    // none installed, the message says what to do.
    for (tool, needle) in [
        (DEBIAN_LOCALCA, "Invoking /usr/bin/swtpm_localca"),
        ("/nonexistent/swtpm_localca", "PKCS#11"),
    ] {
        let sub = dir.join(format!("pkcs11-{}", needle.len()));
        let pkcs11 = SetupConfig::write(&sub, tool);
        std::fs::write(
            sub.join("swtpm-localca.conf"),
            "statedir = /nonexistent\nsigningkey = pkcs11:token=vtpm-test\nissuercert = /nonexistent/i.pem\n",
        )
        .unwrap();
        let pkcs11_s = path_str(&pkcs11.setup_conf);
        let mut args = tpm2_ek_cert_args(&state2_s, &pkcs11_s, &state2_s);
        args.extend(["--tpm", &tpm]);
        let run = run_setup(&vtpm_setup(), &args, dir);
        assert_eq!(run.status.code(), Some(1), "no token, no certificate");
        let output = format!("{}{}", run.stdout, run.stderr);
        assert!(output.contains(needle), "'{needle}' in {output}");
    }
}
