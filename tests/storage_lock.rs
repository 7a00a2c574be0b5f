//! The storage lock and shared storage (state-format.md §7, ctrl-protocol.md §11): two
//! daemons on one state directory hand the lock over in QEMU's migration order, a
//! failed migration gives it back to the source, a third daemon stays out, and the
//! `.lock` descriptor is open exactly while the lock is held (what swtpm's own tests
//! look for in `/proc/<pid>/fd`). Debian's swtpm 0.7.1 has neither `--migration` nor
//! LOCK_STORAGE, so these run on vtpm alone.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ctrl::*;
use common::data::DataClient;
use common::process::{Process, free_port, vtpm_swtpm};
use common::tpm2::{self, StartupType, Tpm2};

const NV_INDEX: u32 = 0x0150_0050;
const TIMEOUT: Duration = Duration::from_secs(20);
const PERMANENT: u32 = 1;
const VOLATILE: u32 = 2;
const SAVESTATE: u32 = 3;
const DECRYPTED: u32 = 1;

struct Daemon {
    process: Process,
    run: tempfile::TempDir,
    ctrl: CtrlClient,
    data_port: u16,
}

impl Daemon {
    fn start(tpmstate: &str, extra: &[&str]) -> Daemon {
        let run = common::short_tempdir();
        let ctrl_path = run.path().join("ctrl");
        let data_port = free_port();
        let mut args = vec![
            "socket".to_string(),
            "--tpm2".into(),
            "--tpmstate".into(),
            tpmstate.into(),
            "--ctrl".into(),
            format!("type=unixio,path={}", ctrl_path.display()),
            "--server".into(),
            format!("type=tcp,port={data_port}"),
            "--log".into(),
            format!("file={},level=20", run.path().join("log").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(&vtpm_swtpm(), &argv, run.path());
        process.wait_tcp_port(data_port);
        let ctrl = CtrlClient::unix(&ctrl_path);
        Daemon {
            process,
            run,
            ctrl,
            data_port,
        }
    }

    fn in_dir(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start(&format!("dir={}", dir.display()), extra)
    }

    fn log(&self) -> String {
        common::read_for_diagnostics(&self.run.path().join("log"))
    }

    fn rc(&mut self, code: u32, body: &[u8]) -> u32 {
        self.ctrl.request(code, body).rc
    }

    fn data(&self) -> DataClient {
        DataClient::tcp(self.data_port)
    }

    /// Whether the process has a descriptor open on a file named `.lock`.
    fn holds_lock_fd(&self) -> bool {
        let fds = format!("/proc/{}/fd", self.process.pid());
        std::fs::read_dir(fds).unwrap().any(|entry| {
            std::fs::read_link(entry.unwrap().path())
                .is_ok_and(|target| target.to_string_lossy().ends_with("/.lock"))
        })
    }

    /// GET_STATEBLOB as QEMU sends it on the source: decrypted, from offset 0.
    fn get_blob(&mut self, blob_type: u32) -> (u32, Vec<u8>) {
        let reply = self
            .ctrl
            .request(GET_STATEBLOB, &be(&[DECRYPTED, blob_type, 0]));
        (reply.rc, reply.body[12..].to_vec())
    }

    /// SET_STATEBLOB as QEMU sends it on the destination: header, then the body.
    fn set_blob(&mut self, blob_type: u32, blob: &[u8]) -> u32 {
        self.ctrl.send_raw(&request_bytes(
            SET_STATEBLOB,
            &be(&[0, blob_type, blob.len() as u32]),
        ));
        self.ctrl.send_raw(blob);
        self.ctrl.read_reply(SET_STATEBLOB).rc
    }
}

fn read_nv(tpm: &mut DataClient) -> u64 {
    u64::from_be_bytes(tpm.nv_read(NV_INDEX, 0, 8).unwrap().try_into().unwrap())
}

/// A source VM's TPM: started, with an NV index holding `value`.
fn source_with_value(dir: &Path, extra: &[&str], value: u64) -> Daemon {
    let mut source = Daemon::in_dir(dir, extra);
    assert_eq!(source.rc(INIT, &be(&[0])), 0, "{}", source.log());
    let mut tpm = source.data();
    tpm.startup(StartupType::Clear).unwrap();
    tpm.nv_define_space(NV_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(NV_INDEX, 0, &value.to_be_bytes()).unwrap();
    source
}

/// QEMU's source side: permanent, volatile, savestate (empty for TPM 2).
fn fetch_blobs(source: &mut Daemon) -> (Vec<u8>, Vec<u8>) {
    let (rc, permanent) = source.get_blob(PERMANENT);
    assert_eq!(rc, 0);
    let (rc, volatile) = source.get_blob(VOLATILE);
    assert_eq!(rc, 0);
    assert_eq!(source.get_blob(SAVESTATE).0, TPM_RETRY, "no savestate");
    (permanent, volatile)
}

/// QEMU's destination side: STOP, the blobs, INIT(DELETE_VOLATILE).
fn push_blobs(dest: &mut Daemon, (permanent, volatile): &(Vec<u8>, Vec<u8>)) {
    assert_eq!(dest.rc(STOP, &[]), 0);
    assert_eq!(dest.set_blob(PERMANENT, permanent), 0, "{}", dest.log());
    assert_eq!(dest.set_blob(VOLATILE, volatile), 0, "{}", dest.log());
    assert_eq!(dest.rc(INIT, &be(&[1])), 0, "{}", dest.log());
}

#[test]
fn lock_fd_is_open_exactly_while_locked() {
    let dir = common::short_tempdir();
    let mut daemon = Daemon::in_dir(dir.path(), &[]);
    assert!(!daemon.holds_lock_fd(), "not before INIT");
    assert_eq!(daemon.rc(INIT, &be(&[0])), 0);
    assert!(daemon.holds_lock_fd(), "after INIT");
    assert_eq!(daemon.rc(STOP, &[]), 0);
    assert!(daemon.holds_lock_fd(), "STOP keeps it");

    // lock=false: a second daemon runs on the same directory, without the lock.
    let dir_arg = format!("dir={},lock=false", dir.path().display());
    let mut no_lock = Daemon::start(&dir_arg, &[]);
    assert_eq!(
        no_lock.rc(INIT, &be(&[0])),
        0,
        "lock=false ignores the lock"
    );
    assert!(!no_lock.holds_lock_fd());
}

/// Shared storage as libvirt sets it up: the source runs with
/// `--migration release-lock-outgoing`, the destination with
/// `release-lock-outgoing,incoming`, both on the same directory.
#[test]
fn migration_hands_the_lock_over_in_qemus_order() {
    let dir = common::short_tempdir();
    let mut source = source_with_value(dir.path(), &["--migration", "release-lock-outgoing"], 5);
    let mut dest = Daemon::in_dir(
        dir.path(),
        &["--migration", "release-lock-outgoing,incoming"],
    );
    assert!(source.holds_lock_fd() && !dest.holds_lock_fd());

    let blobs = fetch_blobs(&mut source);
    assert!(!source.holds_lock_fd(), "released after the savestate blob");
    let permall = dir.path().join("tpm2-00.permall");
    let stored = std::fs::read(&permall).unwrap();

    push_blobs(&mut dest, &blobs);
    assert!(
        dest.holds_lock_fd(),
        "the destination took it with the state"
    );
    let mut tpm = dest.data();
    assert_eq!(read_nv(&mut tpm), 5, "the destination has the state");
    tpm.nv_write(NV_INDEX, 0, &6u64.to_be_bytes()).unwrap();
    drop(tpm);

    // A third daemon cannot take the lock from the destination.
    let mut third = Daemon::in_dir(dir.path(), &[]);
    assert_eq!(third.rc(INIT, &be(&[0])), TPM_FAIL);
    assert!(
        third.log().contains("in use by another process"),
        "{}",
        third.log()
    );

    // The source must not write the destination's state: QEMU's SHUTDOWN after a
    // successful migration ends it without the automatic TPM2_Shutdown.
    let changed_by_dest = std::fs::read(&permall).unwrap();
    assert_ne!(changed_by_dest, stored, "the destination wrote NV");
    assert_eq!(source.rc(SHUTDOWN, &[]), 0);
    assert!(source.process.wait_exit(TIMEOUT).success());
    assert_eq!(std::fs::read(&permall).unwrap(), changed_by_dest);
}

#[test]
fn failed_migration_gives_the_lock_back_to_the_source() {
    let dir = common::short_tempdir();
    let mut source = source_with_value(dir.path(), &["--migration", "release-lock-outgoing"], 7);
    let blobs = fetch_blobs(&mut source);
    let mut dest = Daemon::in_dir(
        dir.path(),
        &["--migration", "release-lock-outgoing,incoming"],
    );
    assert_eq!(dest.rc(STOP, &[]), 0);
    assert_eq!(dest.set_blob(PERMANENT, &blobs.0), 0);
    assert!(dest.holds_lock_fd());
    // While the destination holds it, a few retries are not enough.
    assert_eq!(source.rc(LOCK_STORAGE, &be(&[5])), TPM_FAIL);

    // The migration fails: the destination goes away, QEMU resumes the source VM.
    assert_eq!(dest.rc(SHUTDOWN, &[]), 0);
    assert!(dest.process.wait_exit(TIMEOUT).success());
    assert_eq!(source.rc(LOCK_STORAGE, &be(&[300])), 0);
    assert!(source.holds_lock_fd());
    let mut tpm = source.data();
    assert_eq!(read_nv(&mut tpm), 7, "the source keeps working");
    tpm.nv_write(NV_INDEX, 0, &8u64.to_be_bytes()).unwrap();
    assert_eq!(read_nv(&mut tpm), 8);
}

/// After `savevm` (blobs fetched, VM continues) the next TPM command takes the lock
/// back by itself; when another process holds it, the daemon ends rather than run.
#[test]
fn the_next_command_retakes_the_lock_or_ends_the_daemon() {
    let dir = common::short_tempdir();
    let mut source = source_with_value(dir.path(), &["--migration", "release-lock-outgoing"], 3);
    fetch_blobs(&mut source);
    assert!(!source.holds_lock_fd());
    let mut tpm = source.data();
    assert_eq!(read_nv(&mut tpm), 3);
    assert!(source.holds_lock_fd(), "retaken before the command");
    drop(tpm);

    let (permanent, _) = fetch_blobs(&mut source);
    let mut holder = Daemon::in_dir(dir.path(), &["--migration", "incoming"]);
    assert_eq!(holder.rc(STOP, &[]), 0);
    assert_eq!(holder.set_blob(PERMANENT, &permanent), 0);
    let started = Instant::now();
    let mut tpm = source.data();
    tpm.send_raw(&tpm2::get_random(8));
    let status = source.process.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1), "the source ended");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "after ~300 retries of 10 ms"
    );
    assert!(source.log().contains("terminating"), "{}", source.log());
}

/// Without `release-lock-outgoing` the source keeps its lock: a destination on the same
/// storage cannot take it, answers TPM_IOERROR and ends (as swtpm does).
#[test]
fn without_release_lock_outgoing_the_lock_is_kept() {
    let dir = common::short_tempdir();
    let mut source = source_with_value(dir.path(), &[], 1);
    let blobs = fetch_blobs(&mut source);
    assert!(source.holds_lock_fd());
    let mut dest = Daemon::in_dir(dir.path(), &["--migration", "incoming"]);
    assert_eq!(dest.rc(STOP, &[]), 0);
    assert_eq!(dest.set_blob(PERMANENT, &blobs.0), TPM_IOERROR);
    assert_eq!(dest.process.wait_exit(TIMEOUT).code(), Some(1));
    let mut tpm = source.data();
    assert_eq!(read_nv(&mut tpm), 1);
}

/// `--migration incoming` does not lock at INIT, but before the first TPM command.
#[test]
fn incoming_defers_the_lock_to_the_first_command() {
    let dir = common::short_tempdir();
    let mut dest = Daemon::in_dir(dir.path(), &["--migration", "incoming"]);
    assert_eq!(dest.rc(INIT, &be(&[0])), 0);
    assert!(!dest.holds_lock_fd(), "INIT leaves it");
    let mut tpm = dest.data();
    tpm.startup(StartupType::Clear).unwrap();
    assert!(dest.holds_lock_fd(), "taken before the command");
}

/// The linear backend locks its file only with `lock` (default off, as swtpm 0.10).
#[test]
fn file_backend_locks_only_when_asked() {
    let dir = common::short_tempdir();
    let file = dir.path().join("state");
    let unlocked = format!("backend-uri=file://{}", file.display());
    let mut first = Daemon::start(&unlocked, &[]);
    let mut second = Daemon::start(&unlocked, &[]);
    assert_eq!(first.rc(INIT, &be(&[0])), 0);
    assert_eq!(second.rc(INIT, &be(&[0])), 0, "no lock by default");
    drop((first, second));

    let locked = format!("{unlocked},lock");
    let mut first = Daemon::start(&locked, &[]);
    let mut second = Daemon::start(&locked, &[]);
    assert_eq!(first.rc(INIT, &be(&[0])), 0);
    assert_eq!(second.rc(INIT, &be(&[0])), TPM_FAIL);
    assert!(
        second.log().contains("in use by another process"),
        "{}",
        second.log()
    );
    assert_eq!(first.rc(SHUTDOWN, &[]), 0);
    assert!(first.process.wait_exit(TIMEOUT).success());
    assert_eq!(second.rc(INIT, &be(&[0])), 0, "free once the first is gone");
}

/// A linear file without `lock` is handed over all the same: after the savestate blob
/// the source writes nothing (not even TPM2_Shutdown at exit) unless it takes the
/// storage back, which the next TPM command does.
#[test]
fn unlocked_storage_is_handed_over_too() {
    let dir = common::short_tempdir();
    let file = dir.path().join("state");
    let tpmstate = format!("backend-uri=file://{}", file.display());
    let release = ["--migration", "release-lock-outgoing"];
    let mut source = Daemon::start(&tpmstate, &release);
    assert_eq!(source.rc(INIT, &be(&[0])), 0);
    let mut tpm = source.data();
    tpm.startup(StartupType::Clear).unwrap();
    tpm.nv_define_space(NV_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    drop(tpm);
    fetch_blobs(&mut source);
    let mut tpm = source.data();
    tpm.nv_write(NV_INDEX, 0, &4u64.to_be_bytes())
        .expect("the next command takes the storage back");
    drop(tpm);

    fetch_blobs(&mut source);
    let handed_over = std::fs::read(&file).unwrap();
    assert_eq!(source.rc(SHUTDOWN, &[]), 0);
    assert!(source.process.wait_exit(TIMEOUT).success());
    assert!(
        std::fs::read(&file).unwrap() == handed_over,
        "no TPM2_Shutdown written after the hand-over"
    );
}
