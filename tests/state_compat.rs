//! State compatibility with Debian's swtpm 0.7.1, both ways: a state directory written
//! by one daemon is used by the other, and state blobs taken from one
//! (GET_STATEBLOB) are loaded into the other (SET_STATEBLOB), for TPM 2 and TPM 1.2.
//! Also: the directory holds only swtpm's files, and its `.lock` keeps a second daemon
//! (of either kind) out.

#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ctrl::*;
use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use common::tpm2::{self, StartupType, StorageKey, Tpm2, TpmTransport};

const NV_INDEX: u32 = 0x0150_0020;

/// A daemon on a given state directory, with UNIX control and TCP data sockets.
struct Daemon {
    process: Process,
    _run: tempfile::TempDir,
    ctrl: CtrlClient,
    data_port: u16,
}

impl Daemon {
    fn start(program: &Path, tpm2: bool, state: &Path) -> Daemon {
        let run = common::short_tempdir();
        let ctrl_path = run.path().join("ctrl");
        let data_port = free_port();
        let mut args = vec![
            "socket".to_string(),
            "--tpmstate".into(),
            format!("dir={}", state.display()),
            "--ctrl".into(),
            format!("type=unixio,path={}", ctrl_path.display()),
            "--server".into(),
            format!("type=tcp,port={data_port}"),
            "--log".into(),
            format!("file={},level=20", run.path().join("log").display()),
        ];
        if tpm2 {
            args.push("--tpm2".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(program, &argv, run.path());
        process.wait_tcp_port(data_port);
        let ctrl = CtrlClient::unix(&ctrl_path);
        Daemon {
            process,
            _run: run,
            ctrl,
            data_port,
        }
    }

    fn init(&mut self, flags: u32) {
        let reply = self.ctrl.request(INIT, &be(&[flags]));
        assert_eq!(reply.rc, 0, "INIT; log:\n{}", self.log());
    }

    fn data(&self) -> DataClient {
        DataClient::tcp(self.data_port)
    }

    fn log(&self) -> String {
        common::read_for_diagnostics(&self._run.path().join("log"))
    }

    /// CMD_SHUTDOWN: the daemon must answer 0 and exit 0.
    fn shutdown(mut self) {
        assert_eq!(self.ctrl.request(SHUTDOWN, &[]).rc, 0);
        assert!(self.process.wait_exit(Duration::from_secs(10)).success());
    }

    fn get_blob(&mut self, blob_type: u32) -> Vec<u8> {
        let reply = self.ctrl.request(GET_STATEBLOB, &be(&[1, blob_type, 0]));
        assert_eq!(reply.rc, 0, "GET_STATEBLOB {blob_type}");
        reply.body[12..].to_vec()
    }

    fn set_blob(&mut self, blob_type: u32, blob: &[u8]) {
        self.ctrl.send_raw(&request_bytes(
            SET_STATEBLOB,
            &be(&[0, blob_type, blob.len() as u32]),
        ));
        self.ctrl.send_raw(blob);
        assert_eq!(
            self.ctrl.read_reply(SET_STATEBLOB).rc,
            0,
            "SET_STATEBLOB {blob_type}"
        );
    }
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn new_state_dir(parent: &tempfile::TempDir, name: &str) -> PathBuf {
    let dir = parent.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// What a TPM 2 carries from one daemon to the other.
#[derive(Debug, PartialEq)]
struct Tpm2Contents {
    /// PCRs 0–15 survive Shutdown(STATE)/Startup(STATE); 16 and up are reset.
    pcr10: [u8; 32],
    nv: Vec<u8>,
    /// The public area of a primary key: equal only if the seeds came along.
    primary: Vec<u8>,
}

fn tpm2_fill(tpm: &mut impl TpmTransport, nv: &[u8]) -> Tpm2Contents {
    tpm.startup(StartupType::Clear).unwrap();
    tpm.pcr_extend_sha256(10, &[0x10; 32]).unwrap();
    tpm.nv_define_space(NV_INDEX, nv.len() as u16, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(NV_INDEX, 0, nv).unwrap();
    tpm2_read(tpm, nv.len() as u16)
}

fn tpm2_read(tpm: &mut impl TpmTransport, nv_len: u16) -> Tpm2Contents {
    let created = tpm.create_primary(StorageKey::EccP256).unwrap();
    let primary = tpm.read_public(created.handle).unwrap().public;
    tpm.flush_context(created.handle).unwrap();
    Tpm2Contents {
        pcr10: tpm.pcr_read_sha256(10).unwrap().digest,
        nv: tpm.nv_read(NV_INDEX, 0, nv_len).unwrap(),
        primary,
    }
}

/// A TPM 2 state directory written by `first` is used by `second`, then by `first` again.
fn tpm2_directory_swap(first: &Path, second: &Path) {
    let tmp = common::short_tempdir();
    let state = new_state_dir(&tmp, "state");

    let mut a = Daemon::start(first, true, &state);
    a.init(0);
    let mut data = a.data();
    let written = tpm2_fill(&mut data, b"written by the first daemon");
    data.shutdown(StartupType::State).unwrap();
    drop(data);
    a.shutdown();
    assert_eq!(files_in(&state), names(&[".lock", "tpm2-00.permall"]));

    let mut b = Daemon::start(second, true, &state);
    b.init(0);
    let mut data = b.data();
    data.startup(StartupType::State).unwrap();
    assert_eq!(
        tpm2_read(&mut data, written.nv.len() as u16),
        written,
        "state carried over"
    );
    data.nv_write(NV_INDEX, 0, b"WRITTEN").unwrap();
    data.pcr_extend_sha256(10, &[1; 32]).unwrap();
    let changed = tpm2_read(&mut data, written.nv.len() as u16);
    // Volatile state too: stored here, resumed there without a Startup.
    assert_eq!(b.ctrl.request(STORE_VOLATILE, &[]).rc, 0);
    drop(data);
    b.shutdown();
    assert_eq!(
        files_in(&state),
        names(&[".lock", "tpm2-00.permall", "tpm2-00.volatilestate"])
    );

    let mut c = Daemon::start(first, true, &state);
    c.init(1);
    let mut data = c.data();
    assert_eq!(
        data.startup(StartupType::Clear),
        Err(tpm2::TpmError::Rc(tpm2::RC_INITIALIZE))
    );
    assert_eq!(
        tpm2_read(&mut data, written.nv.len() as u16),
        changed,
        "changes carried back"
    );
    drop(data);
    c.shutdown();
    assert_eq!(files_in(&state), names(&[".lock", "tpm2-00.permall"]));
}

#[test]
fn tpm2_state_dir_from_swtpm_to_vtpm_and_back() {
    tpm2_directory_swap(&debian_swtpm(), &vtpm_swtpm());
}

#[test]
fn tpm2_state_dir_from_vtpm_to_swtpm_and_back() {
    tpm2_directory_swap(&vtpm_swtpm(), &debian_swtpm());
}

/// State blobs from `source` (GET_STATEBLOB) loaded into `target` (SET_STATEBLOB, INIT).
fn tpm2_blob_transfer(source: &Path, target: &Path) {
    let tmp = common::short_tempdir();
    let mut a = Daemon::start(source, true, &new_state_dir(&tmp, "a"));
    a.init(0);
    let mut data = a.data();
    let written = tpm2_fill(&mut data, b"migrated by blob");
    let loaded = data.create_primary(StorageKey::EccP256).unwrap();
    let permanent = a.get_blob(1);
    let volatile = a.get_blob(2);
    assert_eq!(a.ctrl.request(GET_STATEBLOB, &be(&[1, 3, 0])).rc, TPM_RETRY);

    let mut b = Daemon::start(target, true, &new_state_dir(&tmp, "b"));
    assert_eq!(b.ctrl.request(STOP, &[]).rc, 0);
    b.set_blob(1, &permanent);
    b.set_blob(2, &volatile);
    b.init(1);
    let mut data = b.data();
    assert_eq!(
        data.startup(StartupType::Clear),
        Err(tpm2::TpmError::Rc(tpm2::RC_INITIALIZE))
    );
    // The transient key loaded on the source is loaded here too.
    assert_eq!(
        data.read_public(loaded.handle).unwrap().public,
        loaded.key.public
    );
    data.flush_context(loaded.handle).unwrap();
    assert_eq!(tpm2_read(&mut data, written.nv.len() as u16), written);
}

#[test]
fn tpm2_blobs_from_swtpm_load_in_vtpm() {
    tpm2_blob_transfer(&debian_swtpm(), &vtpm_swtpm());
}

#[test]
fn tpm2_blobs_from_vtpm_load_in_swtpm() {
    tpm2_blob_transfer(&vtpm_swtpm(), &debian_swtpm());
}

/// TPM 1.2 commands (TPM 1.2 main spec, part 3).
mod tpm12 {
    pub fn startup(kind: u16) -> Vec<u8> {
        [
            &[0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99][..],
            &kind.to_be_bytes(),
        ]
        .concat()
    }
    pub fn extend(pcr: u32, digest: [u8; 20]) -> Vec<u8> {
        [
            &[0, 0xc1, 0, 0, 0, 34, 0, 0, 0, 0x14][..],
            &pcr.to_be_bytes(),
            &digest,
        ]
        .concat()
    }
    pub fn pcr_read(pcr: u32) -> Vec<u8> {
        [
            &[0, 0xc1, 0, 0, 0, 14, 0, 0, 0, 0x15][..],
            &pcr.to_be_bytes(),
        ]
        .concat()
    }
    pub const SAVE_STATE: [u8; 10] = [0, 0xc1, 0, 0, 0, 10, 0, 0, 0, 0x98];
    pub const ST_CLEAR: u16 = 1;
    pub const ST_STATE: u16 = 2;

    /// The response code of a TPM 1.2 response.
    pub fn rc(response: &[u8]) -> u32 {
        u32::from_be_bytes(response[6..10].try_into().unwrap())
    }
}

fn tpm12_pcr(data: &mut DataClient, pcr: u32) -> Vec<u8> {
    let response = data.transmit(&tpm12::pcr_read(pcr));
    assert_eq!(tpm12::rc(&response), 0, "TPM_PCRRead");
    response[10..30].to_vec()
}

/// TPM 1.2: a savestate and a volatile state written by `first` resume in `second`.
fn tpm12_directory_swap(first: &Path, second: &Path) {
    let tmp = common::short_tempdir();
    let state = new_state_dir(&tmp, "state");
    let mut a = Daemon::start(first, false, &state);
    a.init(0);
    let mut data = a.data();
    assert_eq!(
        tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_CLEAR))),
        0
    );
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::extend(10, [0xa5; 20]))), 0);
    let pcr = tpm12_pcr(&mut data, 10);
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::SAVE_STATE)), 0);
    drop(data);
    a.shutdown();
    assert_eq!(
        files_in(&state),
        names(&[".lock", "tpm-00.permall", "tpm-00.savestate"])
    );

    let mut b = Daemon::start(second, false, &state);
    b.init(0);
    let mut data = b.data();
    assert_eq!(
        tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_STATE))),
        0
    );
    assert_eq!(
        tpm12_pcr(&mut data, 10),
        pcr,
        "PCR 10 restored from the savestate"
    );
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::extend(11, [0x5a; 20]))), 0);
    let pcr11 = tpm12_pcr(&mut data, 11);
    assert_eq!(b.ctrl.request(STORE_VOLATILE, &[]).rc, 0);
    drop(data);
    b.shutdown();

    let mut c = Daemon::start(first, false, &state);
    c.init(1);
    let mut data = c.data();
    assert_eq!(tpm12_pcr(&mut data, 11), pcr11, "volatile state resumed");
    drop(data);
    c.shutdown();
}

#[test]
fn tpm12_state_dir_from_swtpm_to_vtpm_and_back() {
    tpm12_directory_swap(&debian_swtpm(), &vtpm_swtpm());
}

#[test]
fn tpm12_state_dir_from_vtpm_to_swtpm_and_back() {
    tpm12_directory_swap(&vtpm_swtpm(), &debian_swtpm());
}

fn tpm12_blob_transfer(source: &Path, target: &Path) {
    let tmp = common::short_tempdir();
    let mut a = Daemon::start(source, false, &new_state_dir(&tmp, "a"));
    a.init(0);
    let mut data = a.data();
    assert_eq!(
        tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_CLEAR))),
        0
    );
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::extend(12, [0x3c; 20]))), 0);
    let pcr = tpm12_pcr(&mut data, 12);
    drop(data);
    // No TPM_SaveState: like QEMU's migration, the volatile state carries the PCRs.
    let blobs: Vec<(u32, Vec<u8>)> = [1, 2].iter().map(|&t| (t, a.get_blob(t))).collect();
    assert_eq!(a.ctrl.request(GET_STATEBLOB, &be(&[1, 3, 0])).rc, TPM_RETRY);

    let mut b = Daemon::start(target, false, &new_state_dir(&tmp, "b"));
    assert_eq!(b.ctrl.request(STOP, &[]).rc, 0);
    for (blob_type, blob) in &blobs {
        b.set_blob(*blob_type, blob);
    }
    b.init(1);
    let mut data = b.data();
    assert_eq!(tpm12_pcr(&mut data, 12), pcr);

    // After TPM_SaveState the savestate blob exists; with it (and no volatile state) a
    // Startup(ST_STATE) restores the PCRs.
    let mut data = a.data();
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::SAVE_STATE)), 0);
    let permanent = a.get_blob(1);
    let savestate = a.get_blob(3);
    let mut c = Daemon::start(target, false, &new_state_dir(&tmp, "c"));
    assert_eq!(c.ctrl.request(STOP, &[]).rc, 0);
    c.set_blob(1, &permanent);
    c.set_blob(3, &savestate);
    c.init(1);
    let mut data = c.data();
    assert_eq!(
        tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_STATE))),
        0
    );
    assert_eq!(tpm12_pcr(&mut data, 12), pcr);
}

#[test]
fn tpm12_blobs_from_swtpm_load_in_vtpm() {
    tpm12_blob_transfer(&debian_swtpm(), &vtpm_swtpm());
}

#[test]
fn tpm12_blobs_from_vtpm_load_in_swtpm() {
    tpm12_blob_transfer(&vtpm_swtpm(), &debian_swtpm());
}

/// The `.lock` of a state directory keeps a second daemon out, whichever kinds they are.
fn second_daemon_is_locked_out(holder: &Path, intruder: &Path) {
    let tmp = common::short_tempdir();
    let state = new_state_dir(&tmp, "state");
    let mut first = Daemon::start(holder, true, &state);
    first.init(0);
    let mut second = Daemon::start(intruder, true, &state);
    assert_eq!(second.ctrl.request(INIT, &be(&[0])).rc, TPM_FAIL);
    // The refused daemon keeps running and says which directory is taken.
    assert_eq!(second.ctrl.request(GET_CONFIG, &[]).rc, 0);
    if intruder == vtpm_swtpm() {
        let log = second.log();
        assert!(
            log.contains(&state.display().to_string()) && log.contains("in use"),
            "log:\n{log}"
        );
    }
    first.shutdown();
    second.init(0);
}

#[test]
fn lock_keeps_swtpm_out_of_vtpm_state() {
    second_daemon_is_locked_out(&vtpm_swtpm(), &debian_swtpm());
}

#[test]
fn lock_keeps_vtpm_out_of_swtpm_state() {
    second_daemon_is_locked_out(&debian_swtpm(), &vtpm_swtpm());
}

#[test]
fn corrupt_state_file_fails_init_and_is_left_alone() {
    let tmp = common::short_tempdir();
    let state = new_state_dir(&tmp, "state");
    let mut a = Daemon::start(&vtpm_swtpm(), true, &state);
    a.init(0);
    a.shutdown();
    let permall = state.join("tpm2-00.permall");
    let mut bytes = std::fs::read(&permall).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&permall, &bytes).unwrap();

    let mut b = Daemon::start(&vtpm_swtpm(), true, &state);
    assert_ne!(b.ctrl.request(INIT, &be(&[0])).rc, 0);
    assert_eq!(
        std::fs::read(&permall).unwrap(),
        bytes,
        "the file was not overwritten"
    );
    let log = b.log();
    assert!(
        log.contains("tpm2-00.permall"),
        "log names the file:\n{log}"
    );
}
