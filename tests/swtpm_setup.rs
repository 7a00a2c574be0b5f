//! vtpm's swtpm_setup manufactures TPMs that tpm2-tools and OpenSSL accept: the EKs,
//! their certificates and the platform certificate read back from NV, chain to the
//! local CA, match the keys tpm2_createek derives, and have the structure Debian's
//! swtpm_setup gives them. Also: Debian's swtpm as the daemon, PCR bank changes,
//! --not-overwrite, TPM 1.2 ownership, failures and the command line.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod setup_support;

use std::path::Path;

use common::process::{debian_swtpm, vtpm_swtpm};
use setup_support::*;

const RSA2048_EK_CERT: u32 = 0x01C0_0002;
const RSA3072_EK_CERT: u32 = 0x01C0_001C;
const ECC_EK_CERT: u32 = 0x01C0_0016;
const PLATFORM_CERT: u32 = 0x01C0_8000;
const LOCKED_ATTRIBUTES: u32 = 0x6207_2801;
const UNLOCKED_ATTRIBUTES: u32 = 0x6207_2001;

/// libvirt's first-start arguments (libvirt-qemu.md §1.3 a) plus a private config.
fn first_start_args<'a>(state: &'a str, config: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--tpm2",
        "--tpm-state",
        state,
        "--vmid",
        "test:1234",
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--not-overwrite",
        "--config",
        config,
    ];
    args.extend_from_slice(extra);
    args
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// The PEM public key tpm2_createek derives for `algorithm`, as DER.
fn createek_spki(served: &ServedState, algorithm: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("createek-{algorithm}.pem"));
    served.tool_ok(
        "tpm2_createek",
        &[
            "-G",
            algorithm,
            "-c",
            "-",
            "-u",
            &path_str(&out),
            "-f",
            "pem",
        ],
        dir,
    );
    pem_file_der(&out)
}

#[test]
fn tpm2_certificates_read_back_verify_and_match_the_eks() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let state = dir.join("state");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&certs).unwrap();
    let config = SetupConfig::write(dir, "/usr/bin/swtpm_localca");
    let (state_s, config_s, certs_s) = (
        path_str(&state),
        path_str(&config.setup_conf),
        path_str(&certs),
    );
    let args = first_start_args(&state_s, &config_s, &["--write-ek-cert-files", &certs_s]);
    setup_ok(&vtpm_setup(), &args, dir);
    let permall = std::fs::read(state.join("tpm2-00.permall")).unwrap();

    // libvirt's next start: --not-overwrite leaves the state alone.
    let again = setup_ok(&vtpm_setup(), &args, dir);
    assert!(again.stdout.contains("--not-overwrite"), "{}", again.stdout);
    assert_eq!(
        std::fs::read(state.join("tpm2-00.permall")).unwrap(),
        permall
    );

    let served = ServedState::vtpm(&state, dir);
    assert_eq!(
        served.handles("handles-nv-index", dir),
        [RSA2048_EK_CERT, ECC_EK_CERT, PLATFORM_CERT]
    );
    assert_eq!(
        served.handles("handles-persistent", dir),
        [0x8101_0001, 0x8101_0016]
    );
    let files = [
        (RSA2048_EK_CERT, Some("ek-rsa2048.crt")),
        (ECC_EK_CERT, Some("ek-secp384r1.crt")),
        (PLATFORM_CERT, None),
    ];
    for (index, file) in files {
        let cert = served.nv_read(index, dir);
        let (attributes, size) = served.nv_public(index, dir);
        assert_eq!(attributes, LOCKED_ATTRIBUTES, "NV {index:#x}");
        assert_eq!(size, cert.len(), "NV {index:#x} is exactly the certificate");
        if let Some(file) = file {
            assert_eq!(
                std::fs::read(certs.join(file)).unwrap(),
                cert,
                "{file} = NV {index:#x}"
            );
        }
        let der = dir.join(format!("{index:x}.der"));
        std::fs::write(&der, &cert).unwrap();
        let (ok, text) = openssl(&[
            "x509",
            "-inform",
            "DER",
            "-in",
            &path_str(&der),
            "-noout",
            "-text",
        ]);
        assert!(ok, "openssl x509 parses NV {index:#x}: {text}");
        verify_chain(&der, &config.root_cert(), &config.issuer_cert());
    }

    // The certificates certify the keys the TPM derives from the EK templates.
    let rsa_cert = served.nv_read(RSA2048_EK_CERT, dir);
    let ecc_cert = served.nv_read(ECC_EK_CERT, dir);
    assert_eq!(cert_spki(&rsa_cert), createek_spki(&served, "rsa", dir));
    assert_eq!(cert_spki(&ecc_cert), createek_spki(&served, "ecc384", dir));
    assert_eq!(
        cert_spki(&served.nv_read(PLATFORM_CERT, dir)),
        cert_spki(&rsa_cert)
    );
    let readpublic = served.tool_ok("tpm2_readpublic", &["-c", "0x81010001"], dir);
    assert!(readpublic.contains("raw: 0x300b2"), "{readpublic}");
    assert!(
        readpublic.contains("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
    );
    let readpublic = served.tool_ok("tpm2_readpublic", &["-c", "0x81010016"], dir);
    assert!(readpublic.contains("raw: 0x300f2"), "{readpublic}");

    // --lock-nvram: the platform may no longer write.
    let data = dir.join("one-byte");
    std::fs::write(&data, [0]).unwrap();
    let (ok, _, stderr) = served.tool(
        "tpm2_nvwrite",
        &["0x1c00002", "-C", "p", "-i", &path_str(&data)],
        dir,
    );
    assert!(
        !ok && stderr.contains("0x148"),
        "NV write must fail with TPM_RC_NV_LOCKED: {stderr}"
    );

    // The extensions carry the TCG EK credential profile's facts (manufacturing.md §3).
    let issuer_ski = extension_value(&pem_file_der(&config.issuer_cert()), "2.5.29.14").unwrap();
    let aki = extension_value(&rsa_cert, "2.5.29.35").unwrap();
    assert_eq!(&aki[..4], &[0x30, 0x16, 0x80, 0x14]);
    assert_eq!(&aki[4..], &issuer_ski[2..], "AKI = issuer SKI");
    let facts = cert_facts(&rsa_cert);
    let ek_extensions: Vec<(String, bool)> = [
        ("2.5.29.37", false),
        ("2.5.29.17", true),
        ("2.5.29.19", true),
        ("2.5.29.9", false),
        ("2.5.29.35", false),
        ("2.5.29.15", true),
    ]
    .iter()
    .map(|(oid, critical)| (oid.to_string(), *critical))
    .collect();
    assert_eq!(facts.extensions, ek_extensions);
    assert_eq!(facts.subject, "CN=test:1234");
    assert_eq!(facts.issuer, "CN=swtpm-localca");
    assert_eq!(facts.key_len, 256);
    assert!(facts.not_after.contains("9999"), "{}", facts.not_after);
    assert_eq!(
        extension_value(&rsa_cert, "2.5.29.37").unwrap(),
        hex("300706056781050801")
    );
    assert_eq!(
        extension_value(&rsa_cert, "2.5.29.17").unwrap(),
        hex(
            "3046A444304231163014060567810502010C0B69643A30303030313031343110300E060567810502020C05737774706D31163014060567810502030C0B69643A3230313931303233"
        )
    );
    assert_eq!(
        extension_value(&rsa_cert, "2.5.29.9").unwrap(),
        hex("3019301706056781050210310E300C0C03322E30020100020200A4")
    );
    assert_eq!(
        extension_value(&rsa_cert, "2.5.29.15").unwrap(),
        hex("03020520")
    );
    assert_eq!(
        extension_value(&ecc_cert, "2.5.29.15").unwrap(),
        hex("03020308")
    );
    assert_eq!(cert_facts(&ecc_cert).key_algorithm, "1.2.840.10045.2.1");
    let platform = served.nv_read(PLATFORM_CERT, dir);
    assert_eq!(
        extension_value(&platform, "2.5.29.17").unwrap(),
        hex(
            "303BA4393037311230100606678105050101 0C064665646F7261 3110300E06066781050501040C0451454D55 310F300D06066781050501050C03322E31"
        )
    );
    assert_eq!(
        cert_facts(&platform).extensions.last().unwrap(),
        &("2.5.29.37".to_string(), false)
    );
    // The serial file holds the last serial issued: three certificates, counting up.
    let serials: Vec<Vec<u8>> = [&rsa_cert, &platform, &ecc_cert]
        .iter()
        .map(|c| serial(c))
        .collect();
    assert!(
        serials[0] < serials[1] && serials[1] < serials[2],
        "{serials:?}"
    );

    // Only the requested PCR bank is active after the next start.
    let pcrs = served.tool_ok("tpm2_getcap", &["pcrs"], dir);
    for line in pcrs.lines().filter(|l| l.contains(": [")) {
        let active = !line.contains("[ ]");
        assert_eq!(active, line.contains("sha256"), "{pcrs}");
        if active {
            assert!(line.contains("23"), "all 24 PCRs: {line}");
        }
    }
}

/// The NV indices with their attributes, and the structure of each certificate.
fn manufactured_shape(state: &Path, dir: &Path) -> Vec<(u32, u32, CertFacts)> {
    let served = ServedState::vtpm(state, dir);
    served
        .handles("handles-nv-index", dir)
        .into_iter()
        .map(|index| {
            let (attributes, _) = served.nv_public(index, dir);
            let mut facts = cert_facts(&served.nv_read(index, dir));
            // Subjects and CA key sizes are per-run facts, not structure.
            facts.subject = String::new();
            (index, attributes, facts)
        })
        .collect()
}

#[test]
fn same_shape_as_debian_swtpm_setup() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let config = SetupConfig::write(dir, "/usr/bin/swtpm_localca");
    let config_s = path_str(&config.setup_conf);
    let tpm = format!("{} socket", vtpm_swtpm().display());
    let mut shapes = Vec::new();
    for setup in [vtpm_setup(), DEBIAN_SETUP.into()] {
        let state = dir.join(format!("state-{}", shapes.len()));
        std::fs::create_dir(&state).unwrap();
        let state_s = path_str(&state);
        let mut args = first_start_args(&state_s, &config_s, &["--tpm", &tpm]);
        // Without --lock-nvram this time: the attributes then differ in one bit only.
        args.retain(|arg| *arg != "--lock-nvram");
        setup_ok(&setup, &args, dir);
        shapes.push(manufactured_shape(&state, dir));
    }
    assert_eq!(shapes[0].len(), 3);
    assert!(
        shapes[0]
            .iter()
            .all(|(_, attributes, _)| *attributes == UNLOCKED_ATTRIBUTES)
    );
    assert_eq!(
        shapes[0], shapes[1],
        "vtpm's (left) and Debian's (right) swtpm_setup"
    );
}

#[test]
fn debian_swtpm_as_daemon_rsa3072_signing_eks_then_reconfigure() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let config = SetupConfig::write(dir, "swtpm_localca");
    let tpm = format!("{} socket", debian_swtpm().display());
    let (state_s, config_s) = (path_str(&state), path_str(&config.setup_conf));
    let args = [
        "--tpm",
        &tpm,
        "--tpm2",
        "--tpm-state",
        &state_s,
        "--config",
        &config_s,
        "--rsa-keysize",
        "3072",
        "--allow-signing",
        "--decryption",
        "--create-spk",
        "--create-ek-cert",
        "--create-platform-cert",
        "--vmid",
        "vm,one+two",
        "--pcr-banks",
        "sha1",
        "--pcr-banks",
        "sha256",
        "--display",
    ];
    let run = setup_ok(&vtpm_setup(), &args, dir);
    assert!(run.stdout.contains("0x8101001c"), "{}", run.stdout);
    {
        let served = ServedState::start(&debian_swtpm(), &state, true, &[], dir);
        assert_eq!(
            served.handles("handles-nv-index", dir),
            [
                0x01C0_0016,
                0x01C0_0017,
                RSA3072_EK_CERT,
                0x01C0_001D,
                PLATFORM_CERT
            ]
        );
        assert_eq!(
            served.handles("handles-persistent", dir),
            [0x8100_0001, 0x8101_0016, 0x8101_001C]
        );
        assert_eq!(served.nv_public(0x01C0_001D, dir).0, UNLOCKED_ATTRIBUTES);
        let template = served.nv_read(0x01C0_001D, dir);
        assert_eq!(&template[..8], &hex("0001 000C 000600F2"));
        let rsa = served.nv_read(RSA3072_EK_CERT, dir);
        assert_eq!(cert_facts(&rsa).key_len, 384);
        assert_eq!(cert_facts(&rsa).subject, "CN=vm_one_two");
        // A signing and decrypting EK's certificate says so (swtpm's development line).
        assert_eq!(extension_value(&rsa, "2.5.29.15").unwrap(), hex("030205A0"));
        let pcrs = served.tool_ok("tpm2_getcap", &["pcrs"], dir);
        assert!(pcrs.contains("sha1: [ 0"), "{pcrs}");
    }
    // libvirt's reconfiguration on a later start.
    let args = [
        "--tpm",
        &tpm,
        "--tpm2",
        "--tpm-state",
        &state_s,
        "--config",
        &config_s,
        "--pcr-banks",
        "sha256,sha384",
        "--reconfigure",
    ];
    setup_ok(&vtpm_setup(), &args, dir);
    let served = ServedState::start(&debian_swtpm(), &state, true, &[], dir);
    let pcrs = served.tool_ok("tpm2_getcap", &["pcrs"], dir);
    for (bank, active) in [
        ("sha1", false),
        ("sha256", true),
        ("sha384", true),
        ("sha512", false),
    ] {
        let line = pcrs
            .lines()
            .find(|l| l.contains(&format!("{bank}:")))
            .unwrap();
        assert_eq!(!line.contains("[ ]"), active, "{bank}: {pcrs}");
    }
    // The keys survived the reconfiguration.
    assert_eq!(served.handles("handles-persistent", dir).len(), 3);
}
