//! The linear file backend (`--tpmstate backend-uri=file://`) against Debian's swtpm
//! 0.7.1, which has it too: a container written by one daemon is used by the other, in
//! both directions, plain and with `--key`, across a relocation of the permanent state;
//! both lay the container out alike; `--print-states` prints the same line; and a block
//! device works as well as a file.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ctrl::*;
use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use common::tpm2::{self, StartupType, Tpm2};

const SMALL_INDEX: u32 = 0x0150_0030;
const LARGE_INDEX: u32 = 0x0150_0031;
/// Large enough to push the permanent state past its first 2 KiB section.
const LARGE_SIZE: u16 = 1600;
const TIMEOUT: Duration = Duration::from_secs(20);

struct Daemon {
    process: Process,
    run: tempfile::TempDir,
    ctrl: CtrlClient,
    data_port: u16,
}

impl Daemon {
    fn start(program: &Path, tpmstate: &str, extra: &[&str]) -> Daemon {
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
        let mut process = Process::start(program, &argv, run.path());
        process.wait_tcp_port(data_port);
        let ctrl = CtrlClient::unix(&ctrl_path);
        Daemon {
            process,
            run,
            ctrl,
            data_port,
        }
    }

    fn log(&self) -> String {
        common::read_for_diagnostics(&self.run.path().join("log"))
    }

    fn init(&mut self, flags: u32) {
        let rc = self.ctrl.request(INIT, &be(&[flags])).rc;
        assert_eq!(rc, 0, "INIT; log:\n{}", self.log());
    }

    fn data(&self) -> DataClient {
        DataClient::tcp(self.data_port)
    }

    fn shutdown(mut self) {
        assert_eq!(self.ctrl.request(SHUTDOWN, &[]).rc, 0);
        assert!(self.process.wait_exit(TIMEOUT).success());
    }
}

fn read_u64(tpm: &mut DataClient, index: u32) -> u64 {
    let bytes = tpm.nv_read(index, 0, 8).expect("NV_Read");
    u64::from_be_bytes(bytes.try_into().unwrap())
}

/// The slot table of a container: (offset, data length, section length) of the
/// permanent and volatile slots, and the container's length.
fn layout(path: &Path) -> ([(u32, u32, u32); 2], u64) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"nilmptws", "container magic");
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let slot = |n: usize| (word(12 + n * 12), word(16 + n * 12), word(20 + n * 12));
    ([slot(0), slot(1)], bytes.len() as u64)
}

/// swtpm writes a container, vtpm resumes from it and grows the permanent state past
/// its section (the volatile state moves forward), swtpm resumes from vtpm's container.
fn round_trip(extra: &[&str]) {
    let dir = common::short_tempdir();
    let file = dir.path().join("tpm-state");
    let tpmstate = format!("backend-uri=file://{}", file.display());

    let mut swtpm = Daemon::start(&debian_swtpm(), &tpmstate, extra);
    swtpm.init(0);
    let mut tpm = swtpm.data();
    tpm.startup(StartupType::Clear).unwrap();
    tpm.nv_define_space(SMALL_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(SMALL_INDEX, 0, &1u64.to_be_bytes()).unwrap();
    drop(tpm);
    assert_eq!(swtpm.ctrl.request(STORE_VOLATILE, &[]).rc, 0);
    swtpm.shutdown();
    let ([permall, volatile], _) = layout(&file);
    assert_eq!(permall.0, 192, "swtpm's permanent state comes first");
    assert_eq!(volatile.0, 192 + permall.2, "then its volatile state");

    let mut vtpm = Daemon::start(&vtpm_swtpm(), &tpmstate, extra);
    vtpm.init(0);
    let mut tpm = vtpm.data();
    assert_eq!(
        read_u64(&mut tpm, SMALL_INDEX),
        1,
        "vtpm resumed swtpm's TPM"
    );
    tpm.nv_define_space(LARGE_INDEX, LARGE_SIZE, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(LARGE_INDEX, 0, &[0x5a; 512]).unwrap();
    tpm.nv_write(SMALL_INDEX, 0, &2u64.to_be_bytes()).unwrap();
    drop(tpm);
    assert_eq!(vtpm.ctrl.request(STORE_VOLATILE, &[]).rc, 0);
    let ([permall, volatile], len) = layout(&file);
    assert_eq!(volatile.0, 192, "the volatile state moved forward");
    assert_eq!(
        permall.0,
        192 + volatile.2,
        "the permanent state went to the end"
    );
    assert!(permall.2 >= 4096, "in a larger section: {permall:?}");
    assert_eq!(len, u64::from(permall.0 + permall.2), "file ends with it");
    vtpm.shutdown();

    let mut swtpm = Daemon::start(&debian_swtpm(), &tpmstate, extra);
    swtpm.init(0);
    let mut tpm = swtpm.data();
    assert_eq!(
        read_u64(&mut tpm, SMALL_INDEX),
        2,
        "swtpm resumed vtpm's TPM"
    );
    assert_eq!(tpm.nv_read(LARGE_INDEX, 0, 512).unwrap(), vec![0x5a; 512]);
    drop(tpm);
    swtpm.shutdown();
}

#[test]
fn plain_container_moves_between_swtpm_and_vtpm() {
    round_trip(&[]);
}

#[test]
fn encrypted_container_moves_between_swtpm_and_vtpm() {
    let dir = common::short_tempdir();
    let key = dir.path().join("key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff\n").unwrap();
    let key_arg = format!("file={}", key.display());
    round_trip(&["--key", &key_arg]);
}

/// Both daemons lay out a container the same way for the same operations.
#[test]
fn both_daemons_allocate_alike() {
    let mut layouts = Vec::new();
    for program in [debian_swtpm(), vtpm_swtpm()] {
        let dir = common::short_tempdir();
        let file = dir.path().join("tpm-state");
        let mut daemon = Daemon::start(
            &program,
            &format!("backend-uri=file://{}", file.display()),
            &[],
        );
        daemon.init(0);
        let mut tpm = daemon.data();
        tpm.startup(StartupType::Clear).unwrap();
        drop(tpm);
        assert_eq!(daemon.ctrl.request(STORE_VOLATILE, &[]).rc, 0);
        let after_store = layout(&file);
        // GET_STATEBLOB(VOLATILE) deletes the stored volatile state: the file shrinks.
        let reply = daemon.ctrl.request(GET_STATEBLOB, &be(&[1, 2, 0]));
        assert_eq!(reply.rc, 0);
        let after_delete = layout(&file);
        daemon.shutdown();
        layouts.push((after_store, after_delete));
    }
    assert_eq!(layouts[0], layouts[1], "swtpm's layout, then vtpm's");
}

fn print_states(program: &Path, tpmstate: &str) -> (String, String) {
    let run = common::short_tempdir();
    let process = Process::start(
        program,
        &["socket", "--tpm2", "--print-states", "--tpmstate", tpmstate],
        run.path(),
    );
    let finished = process.finish(TIMEOUT);
    assert!(finished.status.success(), "{}", finished.stderr);
    (finished.stdout, finished.stderr)
}

#[test]
fn print_states_matches_swtpm() {
    let dir = common::short_tempdir();
    // A new file is created and formatted by either daemon, with the same message.
    for (program, name) in [(debian_swtpm(), "by-swtpm"), (vtpm_swtpm(), "by-vtpm")] {
        let file = dir.path().join(name);
        let uri = format!("file://{}", file.display());
        let (stdout, stderr) = print_states(&program, &format!("backend-uri={uri}"));
        assert_eq!(stdout, r#"{ "type": "swtpm", "states": [] }"#);
        assert!(
            stderr.contains(&format!("Formatting '{uri}' as new linear NVRAM store")),
            "{stderr}"
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 192);
    }
    // A container with state, and a state directory: the same line from both.
    let file = dir.path().join("tpm-state");
    let state_dir = dir.path().join("state-dir");
    std::fs::create_dir(&state_dir).unwrap();
    for tpmstate in [
        format!("backend-uri=file://{}", file.display()),
        format!("dir={}", state_dir.display()),
    ] {
        let mut daemon = Daemon::start(&vtpm_swtpm(), &tpmstate, &[]);
        daemon.init(0);
        assert_eq!(daemon.ctrl.request(STORE_VOLATILE, &[]).rc, 0);
        // While the daemon runs and holds the lock: 0.10 does not lock for this.
        let (ours, _) = print_states(&vtpm_swtpm(), &tpmstate);
        daemon.shutdown();
        let (theirs, _) = print_states(&debian_swtpm(), &tpmstate);
        assert_eq!(ours, theirs, "{tpmstate}");
        assert!(
            ours.contains(r#"{"name": "volatilestate", "size": "#),
            "{ours}"
        );
    }
}

/// A file that is not a container is never formatted over (swtpm would).
#[test]
fn a_foreign_file_is_refused_and_kept() {
    let dir = common::short_tempdir();
    let file = dir.path().join("notes");
    std::fs::write(&file, b"not a TPM state").unwrap();
    let run = common::short_tempdir();
    let process = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--flags",
            "not-need-init",
            "--tpmstate",
            &format!("backend-uri=file://{}", file.display()),
        ],
        run.path(),
    );
    let finished = process.finish(TIMEOUT);
    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains(&file.display().to_string())
            && finished.stderr.contains("not a linear TPM state store"),
        "{}",
        finished.stderr
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a TPM state");
}

/// A loop device stands in for the block device libvirt could hand over.
struct LoopDevice {
    device: PathBuf,
    _backing: tempfile::TempDir,
}

impl LoopDevice {
    fn attach(size: u64) -> Option<LoopDevice> {
        let backing = common::short_tempdir();
        let image = backing.path().join("disk");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size)
            .unwrap();
        let output = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output();
        match output {
            Ok(out) if out.status.success() => Some(LoopDevice {
                device: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
                _backing: backing,
            }),
            other => {
                eprintln!(
                    "SKIPPED: cannot attach a loop device here ({other:?}); this test needs root and /dev/loop-control"
                );
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.device)
            .status();
    }
}

#[test]
fn block_device_holds_the_state_for_both_daemons() {
    let Some(device) = LoopDevice::attach(256 * 1024) else {
        return;
    };
    let tpmstate = format!("backend-uri=file://{}", device.device.display());
    let mut vtpm = Daemon::start(&vtpm_swtpm(), &tpmstate, &[]);
    vtpm.init(0);
    let mut tpm = vtpm.data();
    tpm.startup(StartupType::Clear).unwrap();
    tpm.nv_define_space(SMALL_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(SMALL_INDEX, 0, &9u64.to_be_bytes()).unwrap();
    drop(tpm);
    assert!(vtpm.log().contains("Formatting"), "{}", vtpm.log());
    vtpm.shutdown();
    assert_eq!(
        std::fs::metadata(&device.device).unwrap().len(),
        0,
        "a block device reports no file length; it was not resized"
    );

    let mut swtpm = Daemon::start(&debian_swtpm(), &tpmstate, &[]);
    swtpm.init(0);
    let mut tpm = swtpm.data();
    tpm.startup(StartupType::Clear).unwrap();
    assert_eq!(
        read_u64(&mut tpm, SMALL_INDEX),
        9,
        "swtpm reads vtpm's device"
    );
    drop(tpm);
    swtpm.shutdown();
}
