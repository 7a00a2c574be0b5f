//! TPM 1.2 manufacturing with ownership (the owner password then authorizes reading the
//! certificates back), and swtpm_setup's command line: --version, --help,
//! --print-capabilities next to Debian's, refused options and their exit codes.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod setup_support;

use std::path::Path;

use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use hmac::{Hmac, KeyInit, Mac};
use setup_support::*;
use sha1::{Digest, Sha1};

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// TPM_NV_ReadValue of `size` bytes at `index`, authorized by the owner password over
/// a fresh OIAP session. Returns the response code and the data.
fn owner_nv_read(
    tpm: &mut DataClient,
    index: u32,
    size: u32,
    owner_password: &[u8],
) -> (u32, Vec<u8>) {
    let oiap = tpm.transmit_raw(&[0, 0xC1, 0, 0, 0, 10, 0, 0, 0, 0x0A]);
    assert_eq!(be32(&oiap, 6), 0, "TPM_OIAP");
    let handle = be32(&oiap, 10);
    let nonce_even = &oiap[14..34];
    let nonce_odd = [0x5A; 20];
    let mut params = Vec::new();
    params.extend_from_slice(&index.to_be_bytes());
    params.extend_from_slice(&0u32.to_be_bytes());
    params.extend_from_slice(&size.to_be_bytes());
    let ordinal = 0xCFu32.to_be_bytes();
    let digest = Sha1::digest([&ordinal[..], &params].concat());
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&Sha1::digest(owner_password)).unwrap();
    mac.update(&digest);
    mac.update(nonce_even);
    mac.update(&nonce_odd);
    mac.update(&[0]);
    let auth = mac.finalize().into_bytes();
    let mut command = vec![0, 0xC2, 0, 0, 0, 0];
    command.extend_from_slice(&ordinal);
    command.extend_from_slice(&params);
    command.extend_from_slice(&handle.to_be_bytes());
    command.extend_from_slice(&nonce_odd);
    command.push(0);
    command.extend_from_slice(&auth);
    let len = command.len() as u32;
    command[2..6].copy_from_slice(&len.to_be_bytes());
    let response = tpm.transmit_raw(&command);
    let rc = be32(&response, 6);
    if rc != 0 {
        return (rc, Vec::new());
    }
    let data_len = be32(&response, 10) as usize;
    (rc, response[14..14 + data_len].to_vec())
}

trait Raw {
    fn transmit_raw(&mut self, command: &[u8]) -> Vec<u8>;
}

impl Raw for DataClient {
    fn transmit_raw(&mut self, command: &[u8]) -> Vec<u8> {
        self.send_raw(command);
        self.read_response()
    }
}

#[test]
fn tpm12_ownership_and_certificates() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let config = SetupConfig::write(dir, "/usr/bin/swtpm_localca");
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let (state_s, config_s) = (path_str(&state), path_str(&config.setup_conf));
    let args = [
        "--tpm-state",
        &state_s,
        "--config",
        &config_s,
        "--take-ownership",
        "--ownerpass",
        "owner-pw",
        "--srk-well-known",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--write-ek-cert-files",
        &state_s,
        "--vmid",
        "ignored-for-tpm12",
    ];
    setup_ok(&vtpm_setup(), &args, dir);
    let cert_file = state.join("ek-rsa2048.crt");
    verify_chain(&cert_file, &config.root_cert(), &config.issuer_cert());
    let der = std::fs::read(&cert_file).unwrap();
    let facts = cert_facts(&der);
    assert_eq!(
        facts.signature_algorithm, "1.2.840.113549.1.1.5",
        "sha1WithRSAEncryption"
    );
    assert_eq!(
        facts.subject, "",
        "TPM 1.2 EK certificates have an empty subject"
    );
    assert_eq!(
        extension_value(&der, "2.5.29.9").unwrap(),
        hex("3018301606056781050210310D300B0C03312E32020102020174")
    );

    let port = free_port();
    let ctrl = dir.join("ctrl");
    let args = [
        "socket",
        "--tpmstate",
        &format!("dir={state_s}"),
        "--server",
        &format!("type=tcp,port={port}"),
        "--ctrl",
        &format!("type=unixio,path={}", ctrl.display()),
        "--flags",
        "not-need-init,startup-clear",
    ];
    let mut daemon = Process::start(&vtpm_swtpm(), &args, dir);
    daemon.wait_tcp_port(port);
    let mut tpm = DataClient::tcp(port);
    // TPM_GetCapability(TPM_CAP_PROPERTY, TPM_CAP_PROP_OWNER): owned.
    let owner = tpm.transmit_raw(&[
        0, 0xC1, 0, 0, 0, 0x16, 0, 0, 0, 0x65, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 1, 0x11,
    ]);
    assert_eq!(be32(&owner, 6), 0);
    assert_eq!(
        &owner[10..15],
        &[0, 0, 0, 1, 1],
        "TPM_CAP_PROP_OWNER is TRUE"
    );
    // The owner password works, a wrong one does not; the NV blob is header + DER.
    let blob_len = der.len() as u32 + 7;
    let (rc, blob) = owner_nv_read(&mut tpm, 0x1000_F000, blob_len, b"owner-pw");
    assert_eq!(rc, 0, "owner-authorized TPM_NV_ReadValue");
    assert_eq!(
        &blob[..7],
        &[
            0x10,
            0x01,
            0x00,
            ((blob_len - 5) >> 8) as u8,
            (blob_len - 5) as u8,
            0x10,
            0x02
        ]
    );
    assert_eq!(&blob[7..], &der[..]);
    let (rc, _) = owner_nv_read(&mut tpm, 0x1000_F000, blob_len, b"wrong");
    assert_eq!(rc, 1, "TPM_AUTHFAIL with a wrong owner password");
    let (rc, platform) = owner_nv_read(&mut tpm, 0x1000_F002, 16, b"owner-pw");
    assert_eq!(rc, 0);
    assert_eq!(&platform[..2], &[0x10, 0x01]);
}

#[test]
fn command_line_and_exit_codes() {
    let dir = common::short_tempdir();
    let dir = dir.path();
    let version = setup_ok(&vtpm_setup(), &["--version"], dir);
    assert!(
        version
            .stdout
            .starts_with("TPM emulator setup tool version "),
        "{}",
        version.stdout
    );
    let help = setup_ok(&vtpm_setup(), &["--help"], dir);
    for option in [
        "--tpm-state",
        "--create-config-files",
        "--reconfigure",
        "--pwdfile-fd",
        "--runas",
    ] {
        assert!(help.stdout.contains(option), "--help mentions {option}");
    }
    let refused = |args: &[&str], needle: &str| {
        let run = run_setup(&vtpm_setup(), args, dir);
        assert_eq!(run.status.code(), Some(1), "{args:?}");
        assert!(
            run.stderr.contains(needle),
            "{args:?}: '{needle}' in {}",
            run.stderr
        );
    };
    refused(&["--bogus"], "unknown option '--bogus'");
    refused(&["--tpm2", "--profile-name", "default-v1"], "libtpms 0.10");
    refused(&["--print-profiles"], "libtpms 0.10");
    refused(
        &["--tpm-state", "/tmp", "--pcr-banks", "sha1"],
        "needs --tpm2",
    );
    refused(
        &["--tpm2", "--tpm-state", "/tmp", "--take-ownership"],
        "TPM 1.2",
    );
    refused(&["--tpm2", "--createek"], "--tpm-state");
    refused(
        &["--tpm2", "--tpm-state", "/nonexistent/dir"],
        "/nonexistent/dir",
    );
    refused(
        &[
            "--tpm2",
            "--tpm-state",
            "/tmp",
            "--reconfigure",
            "--createek",
        ],
        "--reconfigure",
    );

    // State that exists is neither replaced nor kept without being told.
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let state_s = path_str(&state);
    setup_ok(
        &vtpm_setup(),
        &["--tpm2", "--tpm-state", &state_s, "--pcr-banks", "-"],
        dir,
    );
    refused(&["--tpm2", "--tpm-state", &state_s], "--overwrite");

    // --print-capabilities as Debian's, with the same daemon.
    let tpm = format!("{} socket", debian_swtpm().display());
    let ours = setup_ok(&vtpm_setup(), &["--print-capabilities", "--tpm", &tpm], dir).stdout;
    let theirs = setup_ok(
        Path::new(DEBIAN_SETUP),
        &["--print-capabilities", "--tpm", &tpm],
        dir,
    )
    .stdout;
    let features = |json: &str| -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["type"], "swtpm_setup");
        value["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(features(&ours), features(&theirs));
    assert!(ours.ends_with(" }\n"), "one line: {ours}");
}
