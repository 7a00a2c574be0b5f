//! State survives anything, proven by fault injection: kill -9 at random moments of an
//! NV-write storm, a full filesystem, unusable directories and files, and bad state
//! blobs. Each case checks that nothing acknowledged is lost, nothing stored is
//! overwritten by garbage, and the message names the file and what to do.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ctrl::*;
use common::data::DataClient;
use common::process::{Finished, Process, free_port, vtpm_swtpm};
use common::tpm2::{self, StartupType, Tpm2, TpmTransport};

const NV_INDEX: u32 = 0x0150_0042;
const TIMEOUT: Duration = Duration::from_secs(20);

/// vtpm on `state` with UNIX control and TCP data sockets (INIT is the test's job).
struct Daemon {
    process: Process,
    run: tempfile::TempDir,
    data_port: u16,
}

impl Daemon {
    fn start(state: &Path, extra: &[&str]) -> Daemon {
        let run = common::short_tempdir();
        let data_port = free_port();
        let ctrl = run.path().join("ctrl");
        let mut args = vec![
            "socket".to_string(),
            "--tpm2".into(),
            "--tpmstate".into(),
            format!("dir={}", state.display()),
            "--ctrl".into(),
            format!("type=unixio,path={}", ctrl.display()),
            "--server".into(),
            format!("type=tcp,port={data_port}"),
            "--log".into(),
            format!("file={}", run.path().join("log").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::start(&vtpm_swtpm(), &argv, run.path());
        process.wait_unix_socket(&ctrl);
        Daemon {
            process,
            run,
            data_port,
        }
    }

    fn ctrl(&self) -> CtrlClient {
        CtrlClient::unix(&self.run.path().join("ctrl"))
    }

    fn data(&self) -> DataClient {
        DataClient::tcp(self.data_port)
    }

    fn log(&self) -> String {
        common::read_for_diagnostics(&self.run.path().join("log"))
    }
}

fn nv_value(tpm: &mut impl TpmTransport) -> u64 {
    let bytes = tpm.nv_read(NV_INDEX, 0, 8).expect("NV_Read");
    u64::from_be_bytes(bytes.try_into().unwrap())
}

/// A small deterministic generator, so that a failing trial can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// 200 times: write increasing values to an NV index as fast as possible, kill -9 the
/// daemon at a random moment, restart it. Every restart must load, and the index must
/// hold the last acknowledged value or the one in flight, never less.
#[test]
fn kill_9_during_nv_write_storm_loses_nothing_acknowledged() {
    kill_9_storm(200, |_| Vec::new());
}

/// The same for the linear backend, whose changes go through a redo record.
#[test]
fn kill_9_during_nv_write_storm_on_a_linear_file_loses_nothing_acknowledged() {
    kill_9_storm(60, |state| {
        let file = state.join("tpm.img");
        vec![
            "--tpmstate".to_string(),
            format!("backend-uri=file://{}", file.display()),
        ]
    });
}

fn kill_9_storm(trials: usize, storage_args: impl Fn(&Path) -> Vec<String>) {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let extra = storage_args(&state);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut rng = Lcg(0x5eed);
    let mut acknowledged = 0u64;
    for trial in 0..trials {
        let mut daemon = Daemon::start(&state, &extra);
        let reply = daemon.ctrl().request(INIT, &be(&[0]));
        assert_eq!(
            reply.rc,
            0,
            "trial {trial}: restart must load; log:\n{}",
            daemon.log()
        );
        let mut tpm = daemon.data();
        tpm.startup(StartupType::Clear).unwrap();
        if trial == 0 {
            tpm.nv_define_space(NV_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
                .unwrap();
            tpm.nv_write(NV_INDEX, 0, &0u64.to_be_bytes()).unwrap();
        }
        let found = nv_value(&mut tpm);
        assert!(
            found == acknowledged || found == acknowledged + 1,
            "trial {trial}: NV holds {found}, last acknowledged {acknowledged}"
        );
        acknowledged = found;
        // Writes run on this thread; the kill comes from another after a random delay.
        let pid = daemon.process.pid();
        let delay = Duration::from_micros(rng.below(30_000));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
        });
        let mut tpm = tpm;
        loop {
            let next = acknowledged + 1;
            tpm.send_raw(&tpm2::nv_write(NV_INDEX, 0, &next.to_be_bytes()));
            match try_read_response(&mut tpm) {
                Some(response) if tpm2::response_code(&response) == Ok(0) => acknowledged = next,
                Some(response) => panic!("trial {trial}: NV_Write answered {response:02x?}"),
                None => break,
            }
        }
        killer.join().unwrap();
        assert!(
            daemon.process.wait_exit(TIMEOUT).code().is_none(),
            "killed by a signal"
        );
    }
}

/// The response, or `None` when the daemon died before answering.
fn try_read_response(tpm: &mut DataClient) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut header = [0u8; 10];
    tpm.conn.read_exact(&mut header).ok()?;
    let size = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
    let mut response = header.to_vec();
    response.resize(size, 0);
    tpm.conn.read_exact(&mut response[10..]).ok()?;
    Some(response)
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop. Needs root.
struct SmallFs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let parent = common::short_tempdir();
        let path = parent.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .status();
        match status {
            Ok(status) if status.success() => Some(SmallFs {
                path,
                _parent: parent,
            }),
            other => {
                eprintln!("SKIPPED: cannot mount a tmpfs here ({other:?}); this test needs root");
                None
            }
        }
    }

    /// Fills the filesystem, leaving at most a few bytes.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1024];
        use std::io::Write;
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn full_filesystem_fails_the_command_keeps_state_and_recovers() {
    let Some(fs) = SmallFs::mount("256k") else {
        return;
    };
    let state = fs.path.join("state");
    std::fs::create_dir(&state).unwrap();
    let daemon = Daemon::start(&state, &[]);
    assert_eq!(daemon.ctrl().request(INIT, &be(&[0])).rc, 0);
    let mut tpm = daemon.data();
    tpm.startup(StartupType::Clear).unwrap();
    tpm.nv_define_space(NV_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(NV_INDEX, 0, &1u64.to_be_bytes()).unwrap();
    let stored = std::fs::read(state.join("tpm2-00.permall")).unwrap();

    let filler = fs.fill();
    let refused = tpm.nv_write(NV_INDEX, 0, &2u64.to_be_bytes());
    assert!(refused.is_err(), "NV_Write on a full filesystem must fail");
    assert!(
        std::fs::read(state.join("tpm2-00.permall")).unwrap() == stored,
        "previous state intact"
    );
    assert_eq!(
        daemon.ctrl().request(GET_CONFIG, &[]).rc,
        0,
        "daemon keeps serving"
    );
    assert!(
        daemon.log().contains("No space left"),
        "log says why:\n{}",
        daemon.log()
    );

    std::fs::remove_file(filler).unwrap();
    tpm.nv_write(NV_INDEX, 0, &3u64.to_be_bytes())
        .expect("NV_Write once space returns");
    assert_eq!(nv_value(&mut tpm), 3);
}

/// Starts vtpm with `--flags not-need-init` on `state` and expects it to fail.
fn start_must_fail(state: &Path) -> Finished {
    let run = common::short_tempdir();
    let mut process = Process::start(
        &vtpm_swtpm(),
        &[
            "socket",
            "--tpm2",
            "--flags",
            "not-need-init",
            "--tpmstate",
            &format!("dir={}", state.display()),
        ],
        run.path(),
    );
    let deadline = Instant::now() + TIMEOUT;
    while process.try_status().is_none() {
        assert!(
            Instant::now() < deadline,
            "vtpm started on {} instead of failing",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = process.finish(TIMEOUT);
    assert!(
        !finished.status.success(),
        "start on {} must fail",
        state.display()
    );
    finished
}

#[test]
fn missing_directory_is_named() {
    let dir = common::short_tempdir();
    let missing = dir.path().join("missing");
    let finished = start_must_fail(&missing);
    assert!(
        finished.stderr.contains(&missing.display().to_string()),
        "{}",
        finished.stderr
    );
    assert!(!missing.exists(), "nothing was created");
}

#[test]
fn read_only_directory_is_named_and_untouched() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    let state = fs.path.join("state");
    std::fs::create_dir(&state).unwrap();
    {
        let daemon = Daemon::start(&state, &[]);
        assert_eq!(daemon.ctrl().request(INIT, &be(&[0])).rc, 0);
        assert_eq!(daemon.ctrl().request(SHUTDOWN, &[]).rc, 0);
    }
    let before = std::fs::read(state.join("tpm2-00.permall")).unwrap();
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.path)
        .status()
        .unwrap();
    assert!(remount.success());
    let finished = start_must_fail(&state);
    assert!(
        finished.stderr.contains(&state.display().to_string()),
        "{}",
        finished.stderr
    );
    assert!(finished.stderr.contains("Read-only"), "{}", finished.stderr);
    assert!(
        std::fs::read(state.join("tpm2-00.permall")).unwrap() == before,
        "state file untouched"
    );
}

/// Each kind of bad permanent-state file: a clear message naming the file and what to
/// do, a non-zero exit, and the file left exactly as it was.
#[test]
fn bad_state_files_are_named_and_left_alone() {
    let dir = common::short_tempdir();
    let good_state = dir.path().join("good");
    std::fs::create_dir(&good_state).unwrap();
    let tpm12_state = dir.path().join("tpm12");
    std::fs::create_dir(&tpm12_state).unwrap();
    for (state, tpm2) in [(&good_state, true), (&tpm12_state, false)] {
        let run = common::short_tempdir();
        let state_arg = format!("dir={}", state.display());
        let mut argv = vec![
            "socket",
            "--flags",
            "not-need-init,startup-clear",
            "--tpmstate",
            &state_arg,
        ];
        if tpm2 {
            argv.push("--tpm2");
        }
        let port = free_port();
        let server = format!("type=tcp,port={port}");
        argv.extend(["--server", &server]);
        let mut process = Process::start(&vtpm_swtpm(), &argv, run.path());
        let deadline = Instant::now() + TIMEOUT;
        let permall = state.join(if tpm2 {
            "tpm2-00.permall"
        } else {
            "tpm-00.permall"
        });
        common::poll_until(deadline, "the first permanent state", || {
            permall.exists().then_some(())
        });
        // A response on the data channel means the daemon serves, and so handles
        // SIGTERM (the state file appears before its signal handler is installed).
        process.wait_tcp_port(port);
        let mut tpm = DataClient::tcp(port);
        tpm.send_raw(&tpm2::get_random(8));
        tpm.read_response();
        drop(tpm);
        process.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(process.wait_exit(TIMEOUT).success());
    }
    let good = std::fs::read(good_state.join("tpm2-00.permall")).unwrap();
    let tpm12 = std::fs::read(tpm12_state.join("tpm-00.permall")).unwrap();

    // Plain state has no checksum (only `--key` adds an HMAC), so flip a bit libtpms
    // checks: the magic number of its blob (after the 10-byte header, the 6-byte TLV
    // header and the blob's 2-byte version).
    let mut flipped = good.clone();
    flipped[10 + 6 + 2] ^= 0x40;
    let mut wrong_length = good.clone();
    wrong_length.truncate(good.len() - 100);
    let mut truncated_payload = good.clone();
    truncated_payload.truncate(good.len() - 100);
    let new_length = (truncated_payload.len() as u32).to_be_bytes();
    truncated_payload[6..10].copy_from_slice(&new_length);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero-length", Vec::new()),
        ("truncated", wrong_length),
        ("truncated inside the libtpms blob", truncated_payload),
        ("bit flip", flipped),
        (
            "foreign bytes",
            b"\x89PNG\r\n\x1a\n this is not a TPM state at all".to_vec(),
        ),
        ("TPM 1.2 state in a TPM 2 file", tpm12),
    ];
    for (what, bytes) in cases {
        let state = dir.path().join(what.replace(' ', "_"));
        std::fs::create_dir(&state).unwrap();
        let file = state.join("tpm2-00.permall");
        std::fs::write(&file, &bytes).unwrap();
        let finished = start_must_fail(&state);
        assert!(
            finished.stderr.contains(&file.display().to_string()),
            "{what}: the message names the file:\n{}",
            finished.stderr
        );
        assert_eq!(
            finished.stderr.matches(&file.display().to_string()).count(),
            1,
            "{what}: said once, although libtpms loads the file twice:\n{}",
            finished.stderr
        );
        assert!(
            std::fs::read(&file).unwrap() == bytes,
            "{what}: file unchanged"
        );
    }
}

#[test]
fn bad_state_blobs_are_refused_and_state_untouched() {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let daemon = Daemon::start(&state, &[]);
    let mut ctrl = daemon.ctrl();
    assert_eq!(ctrl.request(INIT, &be(&[0])).rc, 0);
    let mut tpm = daemon.data();
    tpm.startup(StartupType::Clear).unwrap();
    tpm.nv_define_space(NV_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(NV_INDEX, 0, &7u64.to_be_bytes()).unwrap();
    drop(tpm); // one data client at a time
    let good = ctrl.request(GET_STATEBLOB, &be(&[1, 1, 0])).body[12..].to_vec();
    // STOP sends the automatic TPM2_Shutdown, which stores state: compare after it.
    assert_eq!(ctrl.request(STOP, &[]).rc, 0);
    let stored = std::fs::read(state.join("tpm2-00.permall")).unwrap();

    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut garbage = good.clone();
    for byte in garbage.iter_mut().skip(40) {
        *byte = byte.wrapping_mul(31).wrapping_add(7);
    }
    for (what, blob) in [
        ("truncated", truncated),
        ("garbage", garbage),
        ("random", vec![0x42; 3000]),
    ] {
        ctrl.send_raw(&request_bytes(
            SET_STATEBLOB,
            &be(&[0, 1, blob.len() as u32]),
        ));
        ctrl.send_raw(&blob);
        assert_ne!(ctrl.read_reply(SET_STATEBLOB).rc, 0, "{what} blob refused");
    }
    // Oversized: refused without reading it all, by closing the connection.
    ctrl.send_raw(&request_bytes(SET_STATEBLOB, &be(&[0, 1, 1 << 30])));
    assert!(ctrl.read_until_closed().is_empty());
    let mut ctrl = daemon.ctrl();

    assert!(
        std::fs::read(state.join("tpm2-00.permall")).unwrap() == stored,
        "state file untouched"
    );
    assert_eq!(ctrl.request(INIT, &be(&[0])).rc, 0);
    let mut tpm = daemon.data();
    tpm.startup(StartupType::Clear).unwrap();
    assert_eq!(nv_value(&mut tpm), 7, "the TPM still holds its state");
}

/// The linear backend on a full filesystem: a change that needs the container to grow
/// fails before anything in it is moved, the container stays as it was, and the same
/// change works once there is space. Changes that fit their section need no space.
#[test]
fn full_filesystem_leaves_a_linear_container_intact() {
    let Some(fs) = SmallFs::mount("256k") else {
        return;
    };
    let file = fs.path.join("tpm.img");
    let tpmstate = format!("backend-uri=file://{}", file.display());
    let daemon = Daemon::start(&fs.path, &["--tpmstate", &tpmstate]);
    assert_eq!(daemon.ctrl().request(INIT, &be(&[0])).rc, 0);
    let mut tpm = daemon.data();
    tpm.startup(StartupType::Clear).unwrap();
    tpm.nv_define_space(NV_INDEX, 8, tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(NV_INDEX, 0, &1u64.to_be_bytes()).unwrap();
    assert_eq!(daemon.ctrl().request(STORE_VOLATILE, &[]).rc, 0);

    let filler = fs.fill();
    tpm.nv_write(NV_INDEX, 0, &2u64.to_be_bytes())
        .expect("an in-place change needs no new blocks");
    let stored = std::fs::read(&file).unwrap();
    const LARGE_INDEX: u32 = NV_INDEX + 1;
    let refused = tpm.nv_define_space(LARGE_INDEX, 1600, tpm2::NV_OWNER_RW_NO_DA);
    assert!(
        refused.is_err(),
        "growing the container on a full filesystem"
    );
    assert!(std::fs::read(&file).unwrap() == stored, "container intact");
    assert!(daemon.log().contains("No space left"), "{}", daemon.log());
    assert_eq!(nv_value(&mut tpm), 2, "the TPM goes on");

    std::fs::remove_file(filler).unwrap();
    tpm.nv_define_space(LARGE_INDEX, 1600, tpm2::NV_OWNER_RW_NO_DA)
        .expect("once space returns");
    tpm.nv_write(NV_INDEX, 0, &3u64.to_be_bytes()).unwrap();
    assert_eq!(nv_value(&mut tpm), 3);
}
