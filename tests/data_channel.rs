//! The data channel: raw TPM packets over TCP and UNIX servers and socketpairs, the
//! answers before INIT, the TCG send-command prefix, `disconnect`, reassembly of
//! commands split across writes, and one write per response.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ctrl::{CtrlClient, INIT, be};
use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use common::tpm2::{self, StartupType, Tpm2};

const READ_CLOCK: [u8; 10] = [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x81];
const TPM12_GET_TICKS: [u8; 10] = [0, 0xc1, 0, 0, 0, 10, 0, 0, 0, 0xf1];
const TPM2_FATAL: [u8; 10] = [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 1];
const TPM12_FATAL: [u8; 10] = [0, 0xc4, 0, 0, 0, 10, 0, 0, 0, 9];
const GET_RANDOM_8: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x7b, 0, 8];

struct Server {
    /// Killed when the test is done with it.
    _process: Process,
    _dir: tempfile::TempDir,
    port: u16,
    ctrl: std::path::PathBuf,
}

/// A daemon with a TCP data server (`--server type=tcp,port=P<server_extra>`).
fn server(program: &Path, tpm2: bool, server_extra: &str, extra: &[&str]) -> Server {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let port = free_port();
    let ctrl = dir.path().join("ctrl");
    let mut args = vec![
        "socket".to_string(),
        "--tpmstate".into(),
        format!("dir={}", state.display()),
        "--ctrl".into(),
        format!("type=unixio,path={}", ctrl.display()),
        "--server".into(),
        format!("type=tcp,port={port}{server_extra}"),
    ];
    if tpm2 {
        args.push("--tpm2".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut process = Process::start(program, &argv, dir.path());
    process.wait_unix_socket(&ctrl);
    Server {
        _process: process,
        _dir: dir,
        port,
        ctrl,
    }
}

impl Server {
    fn init(&self) {
        assert_eq!(CtrlClient::unix(&self.ctrl).request(INIT, &be(&[0])).rc, 0);
    }
}

#[test]
fn answers_before_init_tell_the_tpm_version() {
    for program in [vtpm_swtpm(), debian_swtpm()] {
        for (tpm2, fatal) in [(true, TPM2_FATAL), (false, TPM12_FATAL)] {
            let server = server(&program, tpm2, "", &[]);
            let mut data = DataClient::tcp(server.port);
            for probe in [READ_CLOCK, TPM12_GET_TICKS] {
                data.send_raw(&probe);
                assert_eq!(data.read_once(), fatal, "{} tpm2={tpm2}", program.display());
            }
        }
    }
}

#[test]
fn persistent_connection_and_disconnect_mode() {
    let persistent = server(&vtpm_swtpm(), true, "", &[]);
    persistent.init();
    let mut data = DataClient::tcp(persistent.port);
    data.startup(StartupType::Clear).unwrap();
    assert_eq!(data.get_random(8).unwrap().len(), 8);
    assert_eq!(data.get_random(8).unwrap().len(), 8);

    let disconnecting = server(&vtpm_swtpm(), true, ",disconnect", &[]);
    disconnecting.init();
    for _ in 0..3 {
        let mut data = DataClient::tcp(disconnecting.port);
        data.send_raw(&GET_RANDOM_8);
        let response = data.read_response();
        assert_eq!(tpm2::response_code(&response), Ok(tpm2::RC_INITIALIZE));
        assert!(data.read_once().is_empty(), "closed after the response");
    }
}

#[test]
fn unix_server() {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let data_path = dir.path().join("data");
    let mut process = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--flags",
            "not-need-init,startup-clear",
            "--tpmstate",
            &format!("dir={}", state.display()),
            "--server",
            &format!("type=unixio,path={}", data_path.display()),
        ],
        dir.path(),
    );
    process.wait_unix_socket(&data_path);
    let stream = std::os::unix::net::UnixStream::connect(&data_path).unwrap();
    let mut data = DataClient::unix(stream);
    assert_eq!(
        data.startup(StartupType::Clear),
        Err(tpm2::TpmError::Rc(tpm2::RC_INITIALIZE))
    );
    assert_eq!(data.get_random(32).unwrap().len(), 32);
    process.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
    assert!(!data_path.exists(), "data socket removed at exit");
}

/// The TCG prefix: `u32 8`, locality, `u32 size`; the response is wrapped as
/// `u32 length`, the response, `u32 0`.
fn prefixed(locality: u8, command: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 8, locality];
    out.extend_from_slice(&(command.len() as u32).to_be_bytes());
    out.extend_from_slice(command);
    out
}

#[test]
fn send_command_prefix_same_bytes_as_swtpm() {
    let transcripts: Vec<Vec<Vec<u8>>> = [vtpm_swtpm(), debian_swtpm()]
        .iter()
        .map(|program| {
            let server = server(program, true, "", &[]);
            let mut data = DataClient::tcp(server.port);
            let mut answers = Vec::new();
            // Before INIT: the fatal error, wrapped.
            data.send_raw(&prefixed(0, &READ_CLOCK));
            answers.push(data.read_once());
            server.init();
            for request in [
                prefixed(0, &tpm2::startup(StartupType::Clear)),
                prefixed(0, &[0x80]),
                [0, 0, 0, 9, 0, 0, 0, 0, 12]
                    .iter()
                    .chain(&GET_RANDOM_8)
                    .copied()
                    .collect(),
                prefixed(3, &tpm2::pcr_read_sha256(0)),
            ] {
                data.send_raw(&request);
                answers.push(data.read_once());
            }
            answers
        })
        .collect();
    assert_eq!(transcripts[0], transcripts[1]);
    assert_eq!(
        transcripts[0][0],
        [&[0, 0, 0, 10][..], &TPM2_FATAL, &[0, 0, 0, 0]].concat()
    );
}

#[test]
fn prefix_locality_is_sticky() {
    let server = server(&vtpm_swtpm(), true, "", &[]);
    server.init();
    let mut data = DataClient::tcp(server.port);
    data.startup(StartupType::Clear).unwrap();
    // PCR 21 can only be extended from locality 2.
    let digest = [3u8; 32];
    assert_eq!(
        data.pcr_extend_sha256(21, &digest),
        Err(tpm2::TpmError::Rc(tpm2::RC_LOCALITY))
    );
    data.send_raw(&prefixed(2, &tpm2::get_random(4)));
    let wrapped = data.read_once();
    assert_eq!(&wrapped[wrapped.len() - 4..], &[0, 0, 0, 0]);
    data.pcr_extend_sha256(21, &digest).unwrap();
}

#[test]
fn command_split_across_writes_is_reassembled() {
    let server = server(&vtpm_swtpm(), true, "", &[]);
    server.init();
    let mut data = DataClient::tcp(server.port);
    data.startup(StartupType::Clear).unwrap();
    let command = tpm2::pcr_read_sha256(0);
    for cut in [1, 5, 10, 11] {
        data.send_raw(&command[..cut]);
        std::thread::sleep(Duration::from_millis(50));
        data.send_raw(&command[cut..]);
        let response = data.read_response();
        assert_eq!(tpm2::response_code(&response), Ok(0), "cut at {cut}");
    }
}

#[test]
fn pipelined_commands_each_get_their_answer() {
    let server = server(&vtpm_swtpm(), true, "", &[]);
    server.init();
    let mut data = DataClient::tcp(server.port);
    data.startup(StartupType::Clear).unwrap();
    data.send_raw(&[GET_RANDOM_8, GET_RANDOM_8, GET_RANDOM_8].concat());
    for _ in 0..3 {
        assert_eq!(
            tpm2::parse_get_random(&data.read_response()).unwrap().len(),
            8
        );
    }
}

#[test]
fn truncated_command_is_answered_not_stuck() {
    let server = server(&vtpm_swtpm(), true, "", &[]);
    server.init();
    let mut data = DataClient::tcp(server.port);
    data.startup(StartupType::Clear).unwrap();
    let started = Instant::now();
    // The header announces 12 bytes; only 11 come.
    data.send_raw(&GET_RANDOM_8[..11]);
    let response = data.read_response();
    assert_ne!(tpm2::response_code(&response), Ok(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Fewer than a header's bytes.
    data.send_raw(&[0x80, 1, 0]);
    let response = data.read_response();
    assert_eq!(
        tpm2::response_code(&response),
        Ok(0x9a),
        "TPM_RC_INSUFFICIENT"
    );
    // And the channel still works.
    assert_eq!(data.get_random(8).unwrap().len(), 8);
}

#[test]
fn every_response_comes_in_one_read() {
    let server = server(&vtpm_swtpm(), true, "", &[]);
    server.init();
    let mut data = DataClient::tcp(server.port);
    data.startup(StartupType::Clear).unwrap();
    let created = data.create_primary(tpm2::StorageKey::Rsa2048).unwrap();
    for command in [
        tpm2::get_capability_pcrs(),
        tpm2::read_public(created.handle),
        tpm2::pcr_read_sha256(0),
        tpm2::get_random(64),
    ] {
        data.send_raw(&command);
        let response = data.read_once();
        assert_eq!(
            tpm2::packet_size(&response),
            response.len(),
            "one read, whole response"
        );
    }
}

#[test]
fn vendor_set_locality_needs_allow_set_locality() {
    let set_locality = |locality: u8| [0x80, 1, 0, 0, 0, 11, 0x20, 0, 0x10, 0, locality];
    let refusing = server(&vtpm_swtpm(), true, "", &[]);
    refusing.init();
    let mut data = DataClient::tcp(refusing.port);
    data.send_raw(&set_locality(2));
    assert_eq!(data.read_once(), TPM2_FATAL);

    for program in [vtpm_swtpm(), debian_swtpm()] {
        let allowing = server(&program, true, "", &["--locality", "allow-set-locality"]);
        allowing.init();
        let mut data = DataClient::tcp(allowing.port);
        let answers: Vec<Vec<u8>> = [
            set_locality(2).to_vec(),
            set_locality(5).to_vec(),
            set_locality(2)[..10].to_vec(),
        ]
        .iter()
        .map(|command| {
            data.send_raw(command);
            data.read_once()
        })
        .collect();
        assert_eq!(
            answers[0],
            [0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0],
            "{}",
            program.display()
        );
        assert_eq!(answers[1], [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 7]);
        assert_eq!(answers[2], [0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0x9a]);
    }
}

#[test]
fn tpm12_commands() {
    let server = server(&vtpm_swtpm(), false, "", &[]);
    server.init();
    let mut data = DataClient::tcp(server.port);
    // TPM_Startup(ST_CLEAR), then TPM_GetTicks.
    data.send_raw(&[0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99, 0, 1]);
    assert_eq!(data.read_once(), [0, 0xc4, 0, 0, 0, 10, 0, 0, 0, 0]);
    data.send_raw(&TPM12_GET_TICKS);
    let ticks = data.read_once();
    assert_eq!(&ticks[..2], &[0, 0xc4]);
    assert_eq!(&ticks[6..10], &[0, 0, 0, 0]);
    // A prefixed packet is not recognised on TPM 1.2: libtpms answers it raw.
    data.send_raw(&prefixed(0, &TPM12_GET_TICKS));
    assert_eq!(data.read_once(), [0, 0xc4, 0, 0, 0, 10, 0, 0, 0, 0x19]);
}
