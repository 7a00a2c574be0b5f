//! Debian's swtpm_setup manufactures TPMs with vtpm's daemon as its `--tpm`, with the
//! arguments libvirt uses on a VM's first start (EKs, their certificates and the platform
//! certificate in NV, locked NV), for TPM 2 and TPM 1.2; the result then runs in vtpm.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::ctrl::{CtrlClient, INIT, be};
use common::data::DataClient;
use common::process::{Process, free_port, vtpm_swtpm};
use common::tpm2::{StartupType, Tpm2, TpmTransport};

/// TPM 2 NV indices swtpm_setup writes (TCG EK credential profile).
const RSA2048_EK_CERT_INDEX: u32 = 0x01c0_0002;
const ECC_EK_CERT_INDEX: u32 = 0x01c0_0016;
const PLATFORM_CERT_INDEX: u32 = 0x01c0_8000;

/// A private swtpm_setup configuration whose local CA lives in `dir`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let ca = dir.join("localca");
    std::fs::create_dir_all(&ca).unwrap();
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let options = dir.join("swtpm-localca.options");
    std::fs::write(
        &options,
        "--platform-manufacturer vtpm\n--platform-version 2.1\n--platform-model QEMU\n",
    )
    .unwrap();
    let config = dir.join("swtpm_setup.conf");
    std::fs::write(
        &config,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca_conf.display(),
            options.display()
        ),
    )
    .unwrap();
    config
}

/// Runs Debian's swtpm_setup with vtpm as the TPM; returns its log.
fn swtpm_setup(dir: &Path, state: &Path, extra: &[&str]) -> String {
    let config = write_config(dir);
    let log = dir.join("setup.log");
    let tpm = format!("{} socket", vtpm_swtpm().display());
    let output = Command::new("/usr/bin/swtpm_setup")
        .args(["--tpm", &tpm, "--tpmstate", &state.display().to_string()])
        .args(["--config", &config.display().to_string()])
        .args([
            "--logfile",
            &log.display().to_string(),
            "--vmid",
            "vm1:0d7a2d1a",
        ])
        .args(extra)
        .output()
        .expect("run /usr/bin/swtpm_setup (apt-get install swtpm-tools)");
    let log_text = common::read_for_diagnostics(&log);
    assert!(
        output.status.success(),
        "swtpm_setup failed with {}:\n{}\n{log_text}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    log_text
}

/// vtpm on `state`, initialised, with a TCP data client.
fn run_vtpm(dir: &Path, state: &Path, tpm2: bool) -> (Process, DataClient) {
    let port = free_port();
    let ctrl = dir.join("ctrl");
    let mut args = vec![
        "socket".to_string(),
        "--tpmstate".into(),
        format!("dir={}", state.display()),
        "--ctrl".into(),
        format!("type=unixio,path={}", ctrl.display()),
        "--server".into(),
        format!("type=tcp,port={port}"),
    ];
    if tpm2 {
        args.push("--tpm2".into());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut process = Process::start(&vtpm_swtpm(), &argv, dir);
    process.wait_unix_socket(&ctrl);
    assert_eq!(CtrlClient::unix(&ctrl).request(INIT, &be(&[0])).rc, 0);
    (process, DataClient::tcp(port))
}

/// TPM2_NV_ReadPublic: the index's attributes, or the response code.
fn nv_attributes(tpm: &mut impl TpmTransport, index: u32) -> Result<u32, u32> {
    let mut command = vec![0x80, 1, 0, 0, 0, 14, 0, 0, 1, 0x69];
    command.extend_from_slice(&index.to_be_bytes());
    let response = tpm.transmit(&command);
    let rc = u32::from_be_bytes(response[6..10].try_into().unwrap());
    if rc != 0 {
        return Err(rc);
    }
    // nvPublic: u16 size, u32 index, u16 nameAlg, u32 attributes.
    Ok(u32::from_be_bytes(response[18..22].try_into().unwrap()))
}

const TPMA_NV_WRITTEN: u32 = 0x2000_0000;
const TPMA_NV_WRITELOCKED: u32 = 0x0000_0800;

#[test]
fn tpm2_manufactured_by_debian_swtpm_setup_with_vtpm() {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let flags = [
        "--tpm2",
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--not-overwrite",
    ];
    let log = swtpm_setup(dir.path(), &state, &flags);
    assert!(log.contains("Successfully authored TPM state."), "{log}");
    let permall = std::fs::read(state.join("tpm2-00.permall")).unwrap();

    // libvirt's --not-overwrite on the next start: state exists, nothing changes.
    swtpm_setup(dir.path(), &state, &flags);
    assert_eq!(
        std::fs::read(state.join("tpm2-00.permall")).unwrap(),
        permall
    );

    let (_daemon, mut tpm) = run_vtpm(dir.path(), &state, true);
    tpm.startup(StartupType::Clear).unwrap();
    for index in [
        RSA2048_EK_CERT_INDEX,
        ECC_EK_CERT_INDEX,
        PLATFORM_CERT_INDEX,
    ] {
        let attributes =
            nv_attributes(&mut tpm, index).unwrap_or_else(|rc| panic!("NV {index:#x}: rc {rc:#x}"));
        assert_ne!(attributes & TPMA_NV_WRITTEN, 0, "NV {index:#x} written");
        assert_ne!(
            attributes & TPMA_NV_WRITELOCKED,
            0,
            "NV {index:#x} locked (--lock-nvram)"
        );
    }
    // Only SHA-256 is active, as the configuration asked.
    let banks = tpm.pcr_banks().unwrap();
    let active: Vec<u16> = banks
        .iter()
        .filter(|bank| !bank.pcrs.is_empty())
        .map(|bank| bank.hash_alg)
        .collect();
    assert_eq!(active, vec![0x000B]);
}

#[test]
fn tpm12_manufactured_by_debian_swtpm_setup_with_vtpm() {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let log = swtpm_setup(
        dir.path(),
        &state,
        &[
            "--createek",
            "--take-ownership",
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
        ],
    );
    assert!(log.contains("Successfully locked NVRAM access."), "{log}");
    let (mut daemon, mut tpm) = run_vtpm(dir.path(), &state, false);
    // TPM_Startup(ST_CLEAR) works on the owned TPM.
    let response = tpm.transmit(&[0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99, 0, 1]);
    assert_eq!(&response[6..10], &[0, 0, 0, 0]);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}
