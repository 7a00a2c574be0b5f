//! The control channel, byte for byte: every command over UNIX and TCP control sockets,
//! in every TPM state, with malformed requests; and the same request sequences sent to
//! Debian's swtpm 0.7.1 must give the same bytes back.

#[allow(dead_code)]
mod common;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ctrl::*;
use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use common::tpm2::{self, StartupType, StorageKey, Tpm2};

/// A daemon with a UNIX control socket and a TCP data port.
struct Instance {
    process: Process,
    dir: tempfile::TempDir,
    data_port: u16,
}

impl Instance {
    fn start(program: &Path, tpm2: bool, extra: &[&str]) -> Instance {
        let dir = common::short_tempdir();
        let ctrl = format!("type=unixio,path={}", dir.path().join("ctrl").display());
        Instance::start_in(dir, program, tpm2, &ctrl, extra)
    }

    /// Starts the daemon with the control channel `ctrl` (`--ctrl` options).
    fn start_in(
        dir: tempfile::TempDir,
        program: &Path,
        tpm2: bool,
        ctrl: &str,
        extra: &[&str],
    ) -> Instance {
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let data_port = free_port();
        let mut args = vec![
            "socket".to_string(),
            "--tpmstate".into(),
            format!("dir={}", state.display()),
            "--ctrl".into(),
            ctrl.to_string(),
            "--server".into(),
            format!("type=tcp,port={data_port}"),
            "--log".into(),
            format!("file={},level=20", dir.path().join("log").display()),
        ];
        if tpm2 {
            args.push("--tpm2".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(program, &argv, dir.path());
        process.wait_tcp_port(data_port);
        Instance {
            process,
            dir,
            data_port,
        }
    }

    fn ctrl(&self) -> CtrlClient {
        CtrlClient::unix(&self.ctrl_path())
    }

    fn ctrl_path(&self) -> PathBuf {
        self.dir.path().join("ctrl")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

fn vtpm(tpm2: bool) -> Instance {
    Instance::start(&vtpm_swtpm(), tpm2, &[])
}

/// Sends each request with one write and collects the complete responses.
fn transcript(client: &mut CtrlClient, requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
    requests
        .iter()
        .map(|request| {
            client.send_raw(request);
            let code = u32::from_be_bytes(request[..4].try_into().unwrap());
            client.read_reply(code).wire()
        })
        .collect()
}

fn req(code: u32, body: &[u8]) -> Vec<u8> {
    request_bytes(code, body)
}

/// Requests whose answers do not depend on random TPM state, from a fresh daemon:
/// before INIT, malformed sizes, localities, buffer sizes, info, hashing, stop/init.
fn deterministic_session(tpm2: bool) -> Vec<Vec<u8>> {
    let mut requests = vec![
        // Before INIT.
        req(GET_TPMESTABLISHED, &[]),
        req(RESET_TPMESTABLISHED, &[3, 0, 0, 0]),
        req(HASH_START, &[]),
        req(HASH_DATA, &[0, 0, 0, 3, 1, 2, 3]),
        req(HASH_END, &[]),
        req(CANCEL_TPM_CMD, &[]),
        req(STORE_VOLATILE, &[]),
        req(GET_STATEBLOB, &be(&[0, 1, 0])),
        req(GET_CONFIG, &[]),
        req(SET_LOCALITY, &[0, 0, 0, 0]),
        req(SET_LOCALITY, &[5]),
        req(SET_LOCALITY, &[0xff, 0, 0, 0]),
        req(SET_LOCALITY, &[4]),
        req(SET_LOCALITY, &[0]),
        req(SET_BUFFERSIZE, &be(&[0])),
        req(SET_BUFFERSIZE, &be(&[1000])),
        req(SET_BUFFERSIZE, &be(&[3000])),
        req(SET_BUFFERSIZE, &be(&[0])),
        req(SET_BUFFERSIZE, &be(&[100000])),
        req(SET_BUFFERSIZE, &[0, 0, 0]),
        req(GET_INFO, &be(&[0, 3, 0, 0])),
        req(GET_INFO, &be(&[0, 3, 10, 0])),
        req(GET_INFO, &be(&[0, 0, 0, 0])),
        req(GET_INFO, &be(&[0, 1, 0, 0])[..15]),
        req(GET_INFO, &be(&[0, 0, 2, 0])),
        req(GET_INFO, &be(&[0, 0x100, 0, 0])),
        req(SET_STATEBLOB, &be(&[0, 2, 0])),
        req(0x00, &[]),
        req(0x14, &[]),
        req(0x7fff_ffff, &[1, 2, 3]),
        req(INIT, &[0; 8]),
        req(STOP, &[0]),
        req(SHUTDOWN, &[0]),
        req(GET_CONFIG, &[0]),
        req(GET_TPMESTABLISHED, &[0]),
        // Running.
        req(INIT, &be(&[0])),
        req(GET_TPMESTABLISHED, &[]),
        req(GET_TPMESTABLISHED, &[0]),
        req(SET_BUFFERSIZE, &be(&[4096])),
        req(SET_BUFFERSIZE, &be(&[0])),
        req(GET_STATEBLOB, &be(&[0, 3, 0])),
        req(RESET_TPMESTABLISHED, &[0, 0, 0, 0]),
        req(RESET_TPMESTABLISHED, &[1]),
        req(RESET_TPMESTABLISHED, &[3, 0, 0, 0]),
        req(RESET_TPMESTABLISHED, &[4]),
        req(RESET_TPMESTABLISHED, &[5]),
        req(HASH_START, &[0]),
        req(STORE_VOLATILE, &[0]),
        req(CANCEL_TPM_CMD, &[0]),
        req(INIT, &be(&[0xffff_fffe])),
        req(STORE_VOLATILE, &[]),
        req(INIT, &be(&[1])),
        req(STOP, &[]),
        req(STOP, &[]),
        req(GET_TPMESTABLISHED, &[]),
        req(
            SET_STATEBLOB,
            &[&be(&[0, 1, 8])[..], &[1, 2, 3, 4, 5, 6, 7, 8]].concat(),
        ),
        req(SET_STATEBLOB, &[&be(&[0, 1, 8])[..], &[0; 12]].concat()),
        req(SET_STATEBLOB, &[&be(&[0, 4, 0])[..]].concat()),
        req(
            SET_STATEBLOB,
            &[&be(&[0, 1, 6000])[..], &[0x5a; 6000]].concat(),
        ),
        req(GET_CONFIG, &[]),
        req(INIT, &be(&[0])),
    ];
    if tpm2 {
        // HASH_START sets the established flag on a TPM 2 even before Startup.
        requests.extend([
            req(HASH_START, &[]),
            req(HASH_DATA, &[0, 0, 0, 4, 9, 8, 7, 6]),
            req(HASH_DATA, &[0, 0, 0, 0]),
            req(HASH_END, &[]),
            req(GET_TPMESTABLISHED, &[]),
            req(RESET_TPMESTABLISHED, &[3]),
            req(GET_TPMESTABLISHED, &[]),
            req(CANCEL_TPM_CMD, &[]),
        ]);
    } else {
        requests.extend([
            req(HASH_DATA, &[0, 0, 0, 1, 1]),
            req(HASH_END, &[]),
            req(HASH_START, &[]),
            req(CANCEL_TPM_CMD, &[]),
        ]);
    }
    requests
}

fn differential(tpm2: bool) {
    let requests = deterministic_session(tpm2);
    let ours = vtpm(tpm2);
    let reference = Instance::start(&debian_swtpm(), tpm2, &[]);
    let mine = transcript(&mut ours.ctrl(), &requests);
    let theirs = transcript(&mut reference.ctrl(), &requests);
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(
            mine[i],
            theirs[i],
            "request {i} {:02x?}: vtpm answered {:02x?}, swtpm {:02x?}",
            &request[..request.len().min(24)],
            mine[i],
            theirs[i]
        );
    }
}

#[test]
fn same_bytes_as_swtpm_tpm2() {
    differential(true);
}

#[test]
fn same_bytes_as_swtpm_tpm12() {
    differential(false);
}

#[test]
fn capabilities_include_lock_storage() {
    let tpm2 = vtpm(true);
    let reply = tpm2.ctrl().request(GET_CAPABILITY, &[]);
    assert_eq!(reply.wire(), be(&[0, 0x1ffff]));
    let tpm12 = vtpm(false);
    let reply = tpm12.ctrl().request(GET_CAPABILITY, &[1, 2, 3]);
    assert_eq!(reply.wire(), be(&[0, 0x17fff]));
}

#[test]
fn tcp_control_channel() {
    let port = free_port();
    let ctrl = format!("type=tcp,port={port}");
    let mut instance = Instance::start_in(common::short_tempdir(), &vtpm_swtpm(), true, &ctrl, &[]);
    instance.process.wait_tcp_port(port);
    let mut client = CtrlClient::tcp(port);
    assert_eq!(
        client.request(GET_CAPABILITY, &[]).wire(),
        be(&[0, 0x1ffff])
    );
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    // No descriptors over TCP; and a data channel exists anyway (--server).
    assert_eq!(client.request(SET_DATAFD, &[]).rc, TPM_IOERROR);
    assert_eq!(client.request(SHUTDOWN, &[]).rc, 0);
    assert!(
        instance
            .process
            .wait_exit(Duration::from_secs(10))
            .success()
    );
}

#[test]
fn lock_storage_before_and_after_init() {
    let instance = vtpm(true);
    let mut client = instance.ctrl();
    // Nothing to lock before the storage is in use.
    assert_eq!(client.request(LOCK_STORAGE, &be(&[0])).rc, 0);
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    assert_eq!(client.request(LOCK_STORAGE, &be(&[300])).rc, 0);
    assert_eq!(client.request(LOCK_STORAGE, &[0, 0]).rc, TPM_BAD_PARAMETER);
}

#[test]
fn state_blobs_round_trip() {
    let instance = vtpm(true);
    let mut client = instance.ctrl();
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    let mut data = DataClient::tcp(instance.data_port);
    data.startup(StartupType::Clear).unwrap();
    let digest = [7u8; 32];
    data.pcr_extend_sha256(16, &digest).unwrap();
    let pcr = data.pcr_read_sha256(16).unwrap();

    let permanent = client.request(GET_STATEBLOB, &be(&[1, 1, 0]));
    assert_eq!(permanent.rc, 0);
    let flags = permanent.word(0);
    let (total, len) = (permanent.word(4), permanent.word(8));
    assert_eq!((flags, total), (0, len), "whole blob in one response");
    let blob = permanent.body[12..].to_vec();
    assert_eq!(&blob[..6], &[2, 1, 0, 10, 0, 4], "migration header");
    assert_eq!(
        u32::from_be_bytes(blob[6..10].try_into().unwrap()) as usize,
        blob.len()
    );

    let from_100 = client.request(GET_STATEBLOB, &be(&[0, 1, 100]));
    assert_eq!(from_100.word(4) as usize, blob.len() - 100);
    assert_eq!(&from_100.body[12..], &blob[100..]);
    let past_end = client.request(GET_STATEBLOB, &be(&[0, 1, 1_000_000]));
    assert_eq!((past_end.rc, past_end.word(8)), (0, 0));

    let volatile = client.request(GET_STATEBLOB, &be(&[1, 2, 0]));
    assert_eq!(volatile.rc, 0);
    let volatile = volatile.body[12..].to_vec();
    assert!(
        !instance.state_dir().join("tpm2-00.volatilestate").exists(),
        "GET_STATEBLOB(VOLATILE) leaves no volatile state file"
    );
    let savestate = client.request(GET_STATEBLOB, &be(&[1, 3, 0]));
    assert_eq!(savestate.wire(), be(&[TPM_RETRY, 0, 0, 0]));
    let unknown = client.request(GET_STATEBLOB, &be(&[1, 4, 0]));
    assert_eq!(unknown.wire(), be(&[TPM_FAIL, 0, 0, 0]));

    // While running, SET_STATEBLOB is refused and the channel stays in sync.
    let mut set = req(SET_STATEBLOB, &be(&[0, 1, blob.len() as u32]));
    set.extend_from_slice(&blob);
    client.send_raw(&set);
    assert_eq!(client.read_reply(SET_STATEBLOB).rc, TPM_BAD_ORDINAL);
    assert_eq!(client.request(GET_CONFIG, &[]).rc, 0);

    // Into a fresh daemon: header and body in two writes, as QEMU sends them.
    let target = vtpm(true);
    let mut target_ctrl = target.ctrl();
    assert_eq!(target_ctrl.request(STOP, &[]).rc, 0);
    for (blob_type, blob) in [(1u32, &blob), (2, &volatile)] {
        target_ctrl.send_raw(&req(SET_STATEBLOB, &be(&[0, blob_type, blob.len() as u32])));
        target_ctrl.send_raw(blob);
        assert_eq!(
            target_ctrl.read_reply(SET_STATEBLOB).rc,
            0,
            "blob type {blob_type}"
        );
    }
    assert_eq!(target_ctrl.request(INIT, &be(&[1])).rc, 0);
    let mut target_data = DataClient::tcp(target.data_port);
    assert_eq!(
        target_data.startup(StartupType::Clear),
        Err(tpm2::TpmError::Rc(tpm2::RC_INITIALIZE))
    );
    assert_eq!(target_data.pcr_read_sha256(16).unwrap().digest, pcr.digest);
    assert!(target.state_dir().join("tpm2-00.permall").exists());
}

#[test]
fn store_volatile_then_init_resumes_and_delete_volatile_removes_it() {
    let instance = vtpm(true);
    let mut client = instance.ctrl();
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    let mut data = DataClient::tcp(instance.data_port);
    data.startup(StartupType::Clear).unwrap();
    data.pcr_extend_sha256(16, &[1; 32]).unwrap();
    let pcr = data.pcr_read_sha256(16).unwrap();
    assert_eq!(client.request(STORE_VOLATILE, &[]).rc, 0);
    let volatile = instance.state_dir().join("tpm2-00.volatilestate");
    assert!(volatile.exists());
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    assert!(
        volatile.exists(),
        "INIT without DELETE_VOLATILE keeps the file"
    );
    assert_eq!(
        data.pcr_read_sha256(16).unwrap().digest,
        pcr.digest,
        "resumed"
    );
    assert_eq!(client.request(INIT, &be(&[1])).rc, 0);
    assert!(!volatile.exists(), "INIT(DELETE_VOLATILE) removes it");
    assert_eq!(
        data.pcr_read_sha256(16).unwrap().digest,
        pcr.digest,
        "resumed again"
    );
}

#[test]
fn set_datafd_gives_the_data_channel() {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let ctrl_path = dir.path().join("ctrl");
    let mut process = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--tpmstate",
            &format!("dir={}", state.display()),
            "--ctrl",
            &format!("type=unixio,path={}", ctrl_path.display()),
        ],
        dir.path(),
    );
    process.wait_unix_socket(&ctrl_path);
    let mut client = CtrlClient::unix(&ctrl_path);
    assert_eq!(
        client.request(SET_DATAFD, &[]).rc,
        TPM_BAD_PARAMETER,
        "no descriptor attached"
    );
    let (ours, theirs) = UnixStream::pair().unwrap();
    assert_eq!(client.set_datafd(theirs.as_fd()).rc, 0);
    drop(theirs);
    let (_, spare) = UnixStream::pair().unwrap();
    assert_eq!(
        client.set_datafd(spare.as_fd()).rc,
        TPM_IOERROR,
        "second data channel"
    );

    let mut data = DataClient::unix(ours);
    // QEMU's version probe before INIT: TPM2_ReadClock gets the fatal error, TPM 2 tag.
    data.send_raw(&[0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x81]);
    assert_eq!(data.read_once(), [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 1]);
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    data.startup(StartupType::Clear).unwrap();
    assert_eq!(data.get_random(16).unwrap().len(), 16);

    // After the peer closes, a new data channel is accepted at once (as by swtpm).
    drop(data);
    let (ours, theirs) = UnixStream::pair().unwrap();
    assert_eq!(client.set_datafd(theirs.as_fd()).rc, 0);
    let mut data = DataClient::unix(ours);
    assert_eq!(data.get_random(8).unwrap().len(), 8);
    assert_eq!(client.request(SHUTDOWN, &[]).rc, 0);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
    assert!(!ctrl_path.exists(), "control socket removed at exit");
}

#[test]
fn incomplete_request_closes_the_connection_after_half_a_second() {
    let instance = vtpm(true);
    let mut client = instance.ctrl();
    let start = Instant::now();
    client.send_raw(&INIT.to_be_bytes());
    assert_eq!(client.read_until_closed(), Vec::<u8>::new(), "no response");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Split within the deadline: fine.
    let mut client = instance.ctrl();
    client.send_raw(&INIT.to_be_bytes());
    std::thread::sleep(Duration::from_millis(100));
    client.send_raw(&[0, 0, 0, 0]);
    assert_eq!(client.read_reply(INIT).rc, 0);
}

#[test]
fn hash_data_longer_than_announced_is_refused_not_hung() {
    let instance = vtpm(true);
    let mut client = instance.ctrl();
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    assert_eq!(client.request(HASH_START, &[]).rc, 0);
    assert_eq!(
        client.request(HASH_DATA, &[0, 0, 0, 2, 1, 2, 3, 4, 5]).rc,
        TPM_BAD_PARAMETER
    );
    // Data longer than one buffer, announced correctly, is read on.
    let mut long = be(&[6000]);
    long.extend(std::iter::repeat_n(0xab, 6000));
    assert_eq!(client.request(HASH_DATA, &long).rc, 0);
    assert_eq!(client.request(HASH_END, &[]).rc, 0);
}

#[test]
fn oversized_state_blob_is_refused() {
    let instance = vtpm(true);
    let mut client = instance.ctrl();
    client.send_raw(&req(SET_STATEBLOB, &be(&[0, 1, 64 * 1024 * 1024])));
    assert_eq!(
        client.read_until_closed(),
        Vec::<u8>::new(),
        "closed without a reply"
    );
    // The daemon keeps serving.
    assert_eq!(instance.ctrl().request(GET_CONFIG, &[]).rc, 0);
}

/// TPM_RC_CANCELED: the command was cancelled (CANCEL_TPM_CMD while it ran).
const RC_CANCELED: u32 = 0x909;

#[test]
fn established_and_cancel_answer_during_a_long_command() {
    let instance = vtpm(true);
    let mut client = instance.ctrl();
    assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
    let mut data = DataClient::tcp(instance.data_port);
    data.startup(StartupType::Clear).unwrap();
    // RSA key generation is the slowest TPM command (hundreds of ms for 3072 bits).
    // While it runs, the control channel keeps answering; CANCEL_TPM_CMD is sent again
    // and again (a cancel that arrives before the command starts is a no-op) until the
    // command ends, cancelled. A few attempts, in case a generation is quick.
    for attempt in 0..10 {
        data.send_raw(&tpm2::create_primary(StorageKey::Rsa3072));
        let mut answered_while_running = 0;
        while !data.response_ready() {
            let established = client.request(GET_TPMESTABLISHED, &[]);
            assert_eq!(established.wire(), be(&[0, 0]));
            assert_eq!(client.request(CANCEL_TPM_CMD, &[]).rc, 0);
            answered_while_running += 1;
        }
        let response = data.read_response();
        match tpm2::response_code(&response).unwrap() {
            RC_CANCELED => {
                assert!(
                    answered_while_running > 0,
                    "control answered while the command ran"
                );
                return;
            }
            0 => {
                let handle = tpm2::parse_create_primary(&response).unwrap().handle;
                data.flush_context(handle).unwrap();
                eprintln!("attempt {attempt}: the key was ready before a cancel reached it");
            }
            rc => panic!("CreatePrimary answered {rc:#x}"),
        }
    }
    panic!("CANCEL_TPM_CMD never reached a running RSA-3072 CreatePrimary");
}

#[test]
fn cancel_between_commands_does_not_cancel_the_next_one() {
    for program in [vtpm_swtpm(), debian_swtpm()] {
        let instance = Instance::start(&program, true, &[]);
        let mut client = instance.ctrl();
        assert_eq!(client.request(INIT, &be(&[0])).rc, 0);
        let mut data = DataClient::tcp(instance.data_port);
        data.startup(StartupType::Clear).unwrap();
        assert_eq!(client.request(CANCEL_TPM_CMD, &[]).rc, 0);
        let created = data.create_primary(StorageKey::Rsa2048);
        assert!(created.is_ok(), "{}: {created:?}", program.display());
    }
}

/// TPM 1.2's in-band TSC_ResetEstablishmentBit (from locality 3) clears the flag that
/// HASH_START set, and GET_TPMESTABLISHED sees it at once, as with swtpm: the daemon
/// refreshes its copy of the flag after that command (not after every command).
#[test]
fn tpm12_in_band_reset_of_the_established_flag() {
    let established = |ctrl: &mut CtrlClient| ctrl.request(GET_TPMESTABLISHED, &[]).wire()[4];
    for program in [vtpm_swtpm(), debian_swtpm()] {
        let what = program.display().to_string();
        let instance = Instance::start(&program, false, &[]);
        let mut ctrl = instance.ctrl();
        assert_eq!(ctrl.request(INIT, &be(&[0])).rc, 0, "{what}");
        let mut data = DataClient::tcp(instance.data_port);
        data.send_raw(&[0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99, 0, 1]);
        assert_eq!(data.read_once()[6..10], [0, 0, 0, 0], "{what}: TPM_Startup");
        for (code, body) in [
            (HASH_START, &[][..]),
            (HASH_DATA, &[0, 0, 0, 4, 9, 8, 7, 6][..]),
            (HASH_END, &[][..]),
        ] {
            assert_eq!(ctrl.request(code, body).rc, 0, "{what}: {code:#x}");
        }
        assert_eq!(
            established(&mut ctrl),
            1,
            "{what}: set by the hash sequence"
        );
        // A TPM command that does not touch the flag (TPM_GetCapability, version) leaves it.
        data.send_raw(&[0, 0xc1, 0, 0, 0, 18, 0, 0, 0, 0x65, 0, 0, 0, 6, 0, 0, 0, 0]);
        assert_eq!(
            data.read_once()[6..10],
            [0, 0, 0, 0],
            "{what}: TPM_GetCapability"
        );
        assert_eq!(established(&mut ctrl), 1, "{what}: after TPM_GetCapability");
        assert_eq!(ctrl.request(SET_LOCALITY, &[3]).rc, 0, "{what}");
        data.send_raw(&[0, 0xc1, 0, 0, 0, 10, 0x40, 0, 0, 0x0b]);
        assert_eq!(
            data.read_once()[6..10],
            [0, 0, 0, 0],
            "{what}: TSC_ResetEstablishmentBit"
        );
        assert_eq!(established(&mut ctrl), 0, "{what}: reset in-band");
    }
}
