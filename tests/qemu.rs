//! End-to-end tests: a real QEMU (TCG) whose tpm-tis / tpm-crb device is backed by the
//! backend under test, driven by the test as the guest (qtest) and the operator (QMP).
//!
//! "vtpm" is vtpm's `swtpm` binary; `VTPM_TEST_SWTPM=/usr/bin/swtpm` runs the same tests
//! against Debian's swtpm instead. The interoperability tests always pair the vtpm
//! backend with Debian's swtpm.

#[allow(dead_code)]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use common::tpm2::{
    ALG_SHA256, CreatedPrimary, NV_OWNER_RW_NO_DA, PcrValue, RC_INITIALIZE, RC_LOCALITY,
    RC_NV_DEFINED, RC_REFERENCE_H0, RC_VALUE_PARAM1, StorageKey,
};
use common::{
    Backend, BackendPaths, Machine, Qemu, QemuOptions, RunningBackend, StartupType, Tpm2,
    TpmDevice, TpmError, TpmTransport, poll_until,
};

const BACKEND_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// PCR 10 is free for the OS (the firmware measures into 0–7).
const TEST_PCR: u32 = 10;
/// Extendable only from locality 2 (of 0–3) in the PC Client profile.
const LOCALITY2_PCR: u32 = 21;
const NV_INDEX: u32 = 0x0150_0020;
const NV_DATA: &[u8; 32] = b"vtpm end-to-end test NV contents";
const ZERO_DIGEST: [u8; 32] = [0; 32];

/// A backend plus the QEMU that uses it. QEMU's sockets and both processes' logs live
/// in `run_dir`; the TPM state lives in `state_dir`.
struct Vm {
    backend: RunningBackend,
    qemu: Qemu,
}

impl Vm {
    fn start(
        backend: &Backend,
        state_dir: &Path,
        run_dir: &Path,
        device: TpmDevice,
        configure: impl FnOnce(QemuOptions) -> QemuOptions,
    ) -> Vm {
        Vm::start_with_args(backend, &[], state_dir, run_dir, device, configure)
    }

    fn start_with_args(
        backend: &Backend,
        backend_args: &[&str],
        state_dir: &Path,
        run_dir: &Path,
        device: TpmDevice,
        configure: impl FnOnce(QemuOptions) -> QemuOptions,
    ) -> Vm {
        fs::create_dir_all(run_dir).expect("create run dir");
        let backend = backend.spawn(&BackendPaths::new(state_dir, run_dir), backend_args);
        let options = configure(QemuOptions::new(run_dir, backend.ctrl_socket(), device));
        let qemu = Qemu::start(options);
        Vm { backend, qemu }
    }

    /// QMP `quit`: QEMU must exit 0, and its CMD_SHUTDOWN must make the backend exit 0.
    fn quit(self) {
        let Vm { mut backend, qemu } = self;
        qemu.quit();
        let status = backend.wait_exit(BACKEND_EXIT_TIMEOUT);
        assert!(
            status.success(),
            "backend exited with {status}\n{}",
            backend.diagnostics()
        );
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The value of a SHA-256 PCR after extending `old` with `digest`.
fn extended(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    sha256(&[old.as_slice(), digest.as_slice()].concat())
}

/// Extends `pcr` with the digest of `event` and checks the new value.
fn extend_and_check(tpm: &mut dyn TpmTransport, pcr: u32, event: &[u8]) -> PcrValue {
    let before = tpm.pcr_read_sha256(pcr).unwrap();
    let digest = sha256(event);
    tpm.pcr_extend_sha256(pcr, &digest).unwrap();
    let after = tpm.pcr_read_sha256(pcr).unwrap();
    assert_eq!(after.digest, extended(&before.digest, &digest), "PCR {pcr}");
    after
}

fn define_and_write_nv(tpm: &mut dyn TpmTransport) {
    tpm.nv_define_space(NV_INDEX, NV_DATA.len() as u16, NV_OWNER_RW_NO_DA)
        .unwrap();
    tpm.nv_write(NV_INDEX, 0, NV_DATA).unwrap();
}

fn assert_nv_data(tpm: &mut dyn TpmTransport) {
    let data = tpm.nv_read(NV_INDEX, 0, NV_DATA.len() as u16).unwrap();
    assert_eq!(data, NV_DATA, "NV index contents");
}

/// After a clean quit the state dir holds exactly swtpm's files (QEMU's own tests
/// delete these two names and then rmdir the dir).
fn assert_state_dir_has_only_tpm_files(state_dir: &Path) {
    let mut names: Vec<String> = fs::read_dir(state_dir)
        .expect("read state dir")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".lock", "tpm2-00.permall"], "state dir contents");
}

/// SeaBIOS runs, starts the TPM and measures the boot; then the test stops the vCPU
/// and checks the TPM through the device.
fn firmware_measures_boot(device: TpmDevice) {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    let mut vm = Vm::start(&Backend::vtpm(), &state, dir.path(), device, |o| {
        o.run_firmware().firmware_log()
    });
    vm.qemu.wait_firmware_done();
    vm.qemu.execute("stop", json!({}));
    vm.qemu.wait_runstate("paused");

    let mut tpm = vm.qemu.tpm();
    assert_eq!(
        tpm.startup(StartupType::Clear),
        Err(TpmError::Rc(RC_INITIALIZE)),
        "the firmware should already have sent TPM2_Startup"
    );
    let banks = tpm.pcr_banks().unwrap();
    let sha256_bank = banks.iter().find(|bank| bank.hash_alg == ALG_SHA256);
    assert!(
        sha256_bank.is_some_and(|bank| bank.pcrs.contains(&0)),
        "no active SHA-256 bank with PCR 0: {banks:?}"
    );
    let pcr0 = tpm.pcr_read_sha256(0).unwrap();
    assert_ne!(
        pcr0.digest, ZERO_DIGEST,
        "SeaBIOS should have measured into PCR 0"
    );
    let pcr10 = tpm.pcr_read_sha256(TEST_PCR).unwrap();
    assert_eq!(
        pcr10.digest, ZERO_DIGEST,
        "the firmware does not measure into PCR 10"
    );
    drop(tpm);
    vm.quit();
}

#[test]
fn seabios_measures_boot_through_tis() {
    firmware_measures_boot(TpmDevice::Tis);
}

#[test]
fn seabios_measures_boot_through_crb() {
    firmware_measures_boot(TpmDevice::Crb);
}

/// Startup, GetRandom, PCR extend/read, NV define/write/read on a fresh TPM.
fn exercise_commands(tpm: &mut dyn TpmTransport) {
    tpm.startup(StartupType::Clear).unwrap();
    let first = tpm.get_random(16).unwrap();
    let second = tpm.get_random(16).unwrap();
    assert_eq!(first.len(), 16);
    assert_ne!(first, second, "two GetRandom results are equal");

    let initial = tpm.pcr_read_sha256(TEST_PCR).unwrap();
    assert_eq!(initial.digest, ZERO_DIGEST);
    extend_and_check(tpm, TEST_PCR, b"first event");
    let last = extend_and_check(tpm, TEST_PCR, b"second event");
    // Extends of PCR 10 count; PCRs 16 and 21-22 would not (no-increment attribute).
    assert_eq!(last.update_counter, initial.update_counter + 2);

    define_and_write_nv(tpm);
    assert_nv_data(tpm);
    assert_eq!(
        tpm.nv_define_space(NV_INDEX, NV_DATA.len() as u16, NV_OWNER_RW_NO_DA),
        Err(TpmError::Rc(RC_NV_DEFINED))
    );
}

#[test]
fn tpm_commands_through_tis_on_q35() {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    let mut vm = Vm::start(&Backend::vtpm(), &state, dir.path(), TpmDevice::Tis, |o| o);
    exercise_commands(&mut *vm.qemu.tpm());

    // QEMU passes the TIS locality to the backend (CMD_SET_LOCALITY), and the TPM
    // lets only locality 2 (of 0-3) extend PCR 21.
    let digest = sha256(b"locality event");
    for locality in [0, 1, 3] {
        let mut tis = vm.qemu.tis(locality);
        let result = tis.pcr_extend_sha256(LOCALITY2_PCR, &digest);
        assert_eq!(
            result,
            Err(TpmError::Rc(RC_LOCALITY)),
            "locality {locality}"
        );
    }
    extend_and_check(&mut vm.qemu.tis(2), LOCALITY2_PCR, b"locality event");
    // And back to locality 0.
    assert_nv_data(&mut vm.qemu.tis(0));
    vm.quit();
}

#[test]
fn tpm_commands_through_crb_on_pc() {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    let mut vm = Vm::start(&Backend::vtpm(), &state, dir.path(), TpmDevice::Crb, |o| {
        o.machine(Machine::Pc)
    });
    exercise_commands(&mut *vm.qemu.tpm());
    vm.quit();
}

/// How the backend ends a running TPM 2 whose client sent no TPM2_Shutdown (at a
/// reset, a stop or an exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AutoShutdown {
    /// vtpm's default, as swtpm ≥ 0.8: it sends TPM2_Shutdown(STATE) itself, so the
    /// next Startup(STATE) resumes.
    On,
    /// `--flags disable-auto-shutdown`: like a real TPM losing power, only
    /// Startup(CLEAR) works afterwards.
    Off,
}

impl AutoShutdown {
    fn backend_args(self) -> &'static [&'static str] {
        match self {
            AutoShutdown::On => &[],
            AutoShutdown::Off => &["--flags", "disable-auto-shutdown"],
        }
    }
}

fn system_reset_cycles(auto_shutdown: AutoShutdown) {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");
    let mut vm = Vm::start_with_args(
        &Backend::vtpm(),
        auto_shutdown.backend_args(),
        &state,
        dir.path(),
        TpmDevice::Tis,
        |o| o,
    );
    {
        let mut tpm = vm.qemu.tpm();
        tpm.startup(StartupType::Clear).unwrap();
        define_and_write_nv(&mut *tpm);
    }
    for cycle in 1..=3 {
        let before = extend_and_check(&mut *vm.qemu.tpm(), TEST_PCR, b"before reset");
        vm.qemu.execute("system_reset", json!({}));
        let event = vm.qemu.wait_event("RESET");
        assert_eq!(
            event["data"]["reason"], "host-qmp-system-reset",
            "cycle {cycle}"
        );
        vm.qemu.wait_runstate("prelaunch");

        let mut tpm = vm.qemu.tpm();
        let uninitialized = TpmError::Rc(RC_INITIALIZE);
        assert_eq!(
            tpm.get_random(8).unwrap_err(),
            uninitialized,
            "cycle {cycle}"
        );
        let pcr = tpm.pcr_read_sha256(TEST_PCR);
        assert_eq!(pcr.unwrap_err(), uninitialized, "cycle {cycle}: PCR_Read");
        match auto_shutdown {
            AutoShutdown::On => {
                tpm.startup(StartupType::State).unwrap();
                let pcr = tpm.pcr_read_sha256(TEST_PCR).unwrap();
                assert_eq!(pcr.digest, before.digest, "cycle {cycle}: PCR resumed");
                // A clear start on the next cycle needs a fresh reset: do it now.
                tpm.shutdown(StartupType::Clear).unwrap();
                drop(tpm);
                vm.qemu.execute("system_reset", json!({}));
                vm.qemu.wait_event("RESET");
                vm.qemu.wait_runstate("prelaunch");
                tpm = vm.qemu.tpm();
            }
            AutoShutdown::Off => {
                // Nothing was saved with Shutdown(STATE): only a clear start works.
                assert_eq!(
                    tpm.startup(StartupType::State),
                    Err(TpmError::Rc(RC_VALUE_PARAM1)),
                    "cycle {cycle}: Startup(STATE)"
                );
            }
        }
        tpm.startup(StartupType::Clear).unwrap();
        let pcr = tpm.pcr_read_sha256(TEST_PCR).unwrap();
        assert_eq!(
            pcr.digest, ZERO_DIGEST,
            "cycle {cycle}: PCR {TEST_PCR} after a clear start"
        );
        assert_nv_data(&mut *tpm);
    }
    vm.quit();
}

#[test]
fn system_reset_cycles_resume_state_with_auto_shutdown() {
    system_reset_cycles(AutoShutdown::On);
}

#[test]
fn system_reset_cycles_need_startup_clear_without_auto_shutdown() {
    system_reset_cycles(AutoShutdown::Off);
}

/// Quit, then a new backend and QEMU on the same state dir. With Shutdown(STATE)
/// before the quit, or the backend's automatic one, the PCRs resume; otherwise only
/// Startup(CLEAR) works. NV data survives in every case.
fn restart_on_same_state(shutdown_state_first: bool, auto_shutdown: AutoShutdown) {
    let dir = common::short_tempdir();
    let state = dir.path().join("state");

    let mut first = Vm::start_with_args(
        &Backend::vtpm(),
        auto_shutdown.backend_args(),
        &state,
        &dir.path().join("run1"),
        TpmDevice::Tis,
        |o| o,
    );
    let pcr_before = {
        let mut tpm = first.qemu.tpm();
        tpm.startup(StartupType::Clear).unwrap();
        let pcr = extend_and_check(&mut *tpm, TEST_PCR, b"before restart");
        define_and_write_nv(&mut *tpm);
        if shutdown_state_first {
            tpm.shutdown(StartupType::State).unwrap();
        }
        pcr
    };
    first.quit();
    assert_state_dir_has_only_tpm_files(&state);

    let mut second = Vm::start_with_args(
        &Backend::vtpm(),
        auto_shutdown.backend_args(),
        &state,
        &dir.path().join("run2"),
        TpmDevice::Tis,
        |o| o,
    );
    {
        let mut tpm = second.qemu.tpm();
        if shutdown_state_first || auto_shutdown == AutoShutdown::On {
            tpm.startup(StartupType::State).unwrap();
            let pcr = tpm.pcr_read_sha256(TEST_PCR).unwrap();
            assert_eq!(pcr.digest, pcr_before.digest, "PCR {TEST_PCR} resumed");
        } else {
            assert_eq!(
                tpm.startup(StartupType::State),
                Err(TpmError::Rc(RC_VALUE_PARAM1)),
                "Startup(STATE) without a saved state"
            );
            tpm.startup(StartupType::Clear).unwrap();
            let pcr = tpm.pcr_read_sha256(TEST_PCR).unwrap();
            assert_eq!(
                pcr.digest, ZERO_DIGEST,
                "PCR {TEST_PCR} after a clear start"
            );
        }
        assert_nv_data(&mut *tpm);
    }
    second.quit();
    assert_state_dir_has_only_tpm_files(&state);
}

#[test]
fn restart_after_shutdown_state_resumes_pcrs() {
    restart_on_same_state(true, AutoShutdown::Off);
}

#[test]
fn restart_after_quit_resumes_pcrs_thanks_to_auto_shutdown() {
    restart_on_same_state(false, AutoShutdown::On);
}

#[test]
fn restart_without_shutdown_state_needs_startup_clear() {
    restart_on_same_state(false, AutoShutdown::Off);
}

/// What a migrated TPM must still have.
struct TpmContents {
    pcr: PcrValue,
    loaded_key: CreatedPrimary,
    flushed_handle: u32,
}

/// Starts the TPM and gives it a PCR value, an NV index and a loaded transient key (plus
/// one created and flushed again).
fn fill_tpm(tpm: &mut dyn TpmTransport) -> TpmContents {
    tpm.startup(StartupType::Clear).unwrap();
    let pcr = extend_and_check(tpm, TEST_PCR, b"before migration");
    define_and_write_nv(tpm);
    let rsa = tpm.create_primary(StorageKey::Rsa2048).unwrap();
    let ecc = tpm.create_primary(StorageKey::EccP256).unwrap();
    for key in [&rsa, &ecc] {
        // TPM2B_NAME of an object: nameAlg, then the hash of TPMT_PUBLIC.
        let expected = [
            ALG_SHA256.to_be_bytes().as_slice(),
            &sha256(&key.key.public),
        ]
        .concat();
        assert_eq!(key.key.name, expected, "name of key {:#x}", key.handle);
    }
    assert_ne!(rsa.handle, ecc.handle);
    assert_eq!(tpm.read_public(ecc.handle).unwrap(), ecc.key);
    tpm.flush_context(rsa.handle).unwrap();
    assert_eq!(
        tpm.read_public(rsa.handle),
        Err(TpmError::Rc(RC_REFERENCE_H0))
    );
    TpmContents {
        pcr,
        loaded_key: ecc,
        flushed_handle: rsa.handle,
    }
}

/// On a migration destination: the TPM is already started and has everything.
fn assert_tpm_contents(tpm: &mut dyn TpmTransport, expected: &TpmContents) {
    assert_eq!(
        tpm.startup(StartupType::Clear),
        Err(TpmError::Rc(RC_INITIALIZE)),
        "a migrated TPM is already started"
    );
    assert_eq!(tpm.pcr_read_sha256(TEST_PCR).unwrap(), expected.pcr);
    assert_nv_data(tpm);
    let key = &expected.loaded_key;
    assert_eq!(
        tpm.read_public(key.handle).unwrap(),
        key.key,
        "transient key"
    );
    assert_eq!(
        tpm.read_public(expected.flushed_handle),
        Err(TpmError::Rc(RC_REFERENCE_H0)),
        "a flushed key must stay flushed"
    );
}

/// Live migration over a unix socket between two QEMUs, each with its own backend and
/// state dir.
fn migrate_live(source: &Backend, destination: &Backend, device: TpmDevice) {
    let dir = common::short_tempdir();
    let src_dir = dir.path().join("src");
    let dst_dir = dir.path().join("dst");
    let mut src = Vm::start(source, &src_dir.join("state"), &src_dir, device, |o| o);
    let contents = fill_tpm(&mut *src.qemu.tpm());

    let socket = dir.path().join("mig.sock");
    let uri = format!("unix:{}", socket.display());
    let mut dst = Vm::start(destination, &dst_dir.join("state"), &dst_dir, device, |o| {
        o.incoming(&uri)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    poll_until(deadline, "the destination's migration socket", || {
        socket.exists().then_some(())
    });
    assert_eq!(dst.qemu.runstate(), "inmigrate");

    if let Err(err) = src.qemu.migrate_to(&uri) {
        panic!(
            "migration {} -> {} failed: {err}\n{}\n{}",
            source.name(),
            destination.name(),
            dst.qemu.diagnostics(),
            dst.backend.diagnostics()
        );
    }
    assert_eq!(dst.qemu.wait_incoming_done(), "prelaunch");
    assert_tpm_contents(&mut *dst.qemu.tpm(), &contents);
    src.quit();
    dst.quit();
}

#[test]
fn live_migration_over_unix_socket() {
    migrate_live(&Backend::vtpm(), &Backend::vtpm(), TpmDevice::Tis);
}

#[test]
fn migration_from_debian_swtpm_to_vtpm() {
    migrate_live(&Backend::debian_swtpm(), &Backend::vtpm(), TpmDevice::Tis);
}

#[test]
fn migration_from_vtpm_to_debian_swtpm() {
    migrate_live(&Backend::vtpm(), &Backend::debian_swtpm(), TpmDevice::Crb);
}

#[test]
fn save_to_file_and_restore_into_fresh_backend() {
    let dir = common::short_tempdir();
    let saved: PathBuf = dir.path().join("vm.state");
    let src_dir = dir.path().join("src");
    let mut src = Vm::start(
        &Backend::vtpm(),
        &src_dir.join("state"),
        &src_dir,
        TpmDevice::Crb,
        |o| o,
    );
    let contents = fill_tpm(&mut *src.qemu.tpm());
    src.qemu
        .migrate_to(&format!("exec:cat > {}", saved.display()))
        .unwrap_or_else(|err| panic!("save to file: {err}"));
    src.quit();
    let size = fs::metadata(&saved).expect("saved state file").len();
    assert!(size > 0, "the saved state file is empty");

    let dst_dir = dir.path().join("dst");
    let mut dst = Vm::start(
        &Backend::vtpm(),
        &dst_dir.join("state"),
        &dst_dir,
        TpmDevice::Crb,
        |o| o.incoming(&format!("exec:cat {}", saved.display())),
    );
    assert_eq!(dst.qemu.wait_incoming_done(), "prelaunch");
    assert_tpm_contents(&mut *dst.qemu.tpm(), &contents);
    dst.quit();
}
