//! Encrypted state (`--key`) and migration blobs (`--migration-key`), differential
//! against Debian's swtpm 0.7.1 in the same run: state files and blobs encrypted by one
//! load in the other, for every key source; GET_STATEBLOB's flags and sizes, GET_CONFIG,
//! the result codes for wrong, missing and mismatched keys and for tampered files and
//! blobs (with the files left as they were), and the key options' error messages.

#[allow(dead_code)]
mod common;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ctrl::*;
use common::data::DataClient;
use common::process::{Process, debian_swtpm, free_port, vtpm_swtpm};
use common::tpm2::{StartupType, StorageKey, Tpm2, TpmTransport};
use common::tpm12;
use sha2::{Digest, Sha256};
use vtpm::state::crypto::{CryptoError, IvSource, seal};
use vtpm::state::key::KeySize;

const NV_INDEX: u32 = 0x0150_0030;
const NV_LEN: u16 = 24;
const TPM_KEYNOTFOUND: u32 = 0x0D;
const TPM_DECRYPT_ERROR: u32 = 0x21;
const TPM_BAD_KEY_PROPERTY: u32 = 0x28;
const TPM_RC_FAILURE: u32 = 0x101;
const STATE_FLAG_DECRYPTED: u32 = 1;
const STATE_FLAG_ENCRYPTED: u32 = 2;

/// Key files for a test, in its own directory.
struct KeyFiles {
    dir: tempfile::TempDir,
}

impl KeyFiles {
    fn new() -> KeyFiles {
        let files = KeyFiles {
            dir: common::short_tempdir(),
        };
        files.write("hex128", b"00112233445566778899aabbccddeeff\n");
        files.write("hex128-other", b"ffeeddccbbaa99887766554433221100\n");
        files.write(
            "hex256",
            b"0x00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff\n",
        );
        files.write("bin256", &(0u8..32).collect::<Vec<_>>());
        files.write("passphrase", b"correct horse battery staple\n");
        files
    }

    fn write(&self, name: &str, content: &[u8]) {
        std::fs::write(self.path(name), content).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `file=<name>` followed by `params` (e.g. `,mode=aes-256-cbc`).
    fn file(&self, name: &str, params: &str) -> String {
        format!("file={}{params}", self.path(name).display())
    }

    fn pwdfile(&self, params: &str) -> String {
        format!("pwdfile={}{params}", self.path("passphrase").display())
    }
}

/// The key options of one daemon start.
#[derive(Clone, Debug, Default)]
struct Keys {
    key: Option<String>,
    migration_key: Option<String>,
    /// Written into a pipe the daemon inherits as fd 3 (for `pwdfd=3` or `fd=3`), as
    /// libvirt hands over passphrases.
    fd3: Option<Vec<u8>>,
}

impl Keys {
    fn state(key: String) -> Keys {
        Keys {
            key: Some(key),
            ..Keys::default()
        }
    }

    fn migration(key: String) -> Keys {
        Keys {
            migration_key: Some(key),
            ..Keys::default()
        }
    }

    fn both(key: String, migration_key: String) -> Keys {
        Keys {
            key: Some(key),
            migration_key: Some(migration_key),
            ..Keys::default()
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(key) = &self.key {
            args.extend(["--key".to_string(), key.clone()]);
        }
        if let Some(key) = &self.migration_key {
            args.extend(["--migration-key".to_string(), key.clone()]);
        }
        args
    }
}

/// Starts `program args...`, with `fd3` (if any) in a pipe that the program inherits as
/// descriptor 3. Returns the pipe's inode too, to find out whether the program still
/// holds it.
fn spawn(
    program: &Path,
    args: &[String],
    fd3: Option<&[u8]>,
    dir: &Path,
) -> (Process, Option<u64>) {
    let Some(content) = fd3 else {
        return (
            Process::start_with(Command::new(program).args(args), dir),
            None,
        );
    };
    let (reader, writer): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let inode = nix::sys::stat::fstat(&reader).unwrap().st_ino;
    std::io::Write::write_all(&mut std::fs::File::from(writer), content).unwrap();
    (spawn_with_fd3(program, args, reader, dir), Some(inode))
}

/// A shell moves `fd3` from its standard input to descriptor 3 and `exec`s the program,
/// so the PID is the program's.
fn spawn_with_fd3(program: &Path, args: &[String], fd3: OwnedFd, dir: &Path) -> Process {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"exec "$0" "$@" 3<&0 0</dev/null"#)
        .arg(program)
        .args(args);
    Process::start_with_stdin(&mut command, Stdio::from(fd3), dir)
}

/// Whether process `pid` has a descriptor open on the pipe with `inode`.
fn holds_pipe(pid: u32, inode: u64) -> bool {
    let wanted = format!("pipe:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.unwrap().path()).ok())
        .any(|target| target.as_os_str() == wanted.as_str())
}

/// A daemon on a state directory, with UNIX control and TCP data sockets.
struct Daemon {
    process: Process,
    run: tempfile::TempDir,
    ctrl: CtrlClient,
    data_port: u16,
    program: PathBuf,
    /// The inode of the pipe given as fd 3, if one was.
    fd3_pipe: Option<u64>,
}

impl Daemon {
    fn start(program: &Path, tpm2: bool, state: &Path, keys: &Keys) -> Daemon {
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
        args.extend(keys.args());
        let (mut process, fd3_pipe) = spawn(program, &args, keys.fd3.as_deref(), run.path());
        process.wait_tcp_port(data_port);
        let ctrl = CtrlClient::unix(&ctrl_path);
        Daemon {
            process,
            run,
            ctrl,
            data_port,
            program: program.to_owned(),
            fd3_pipe,
        }
    }

    fn is_vtpm(&self) -> bool {
        self.program == vtpm_swtpm()
    }

    fn init_rc(&mut self, flags: u32) -> u32 {
        self.ctrl.request(INIT, &be(&[flags])).rc
    }

    fn init(&mut self, flags: u32) {
        let rc = self.init_rc(flags);
        assert_eq!(
            rc,
            0,
            "INIT of {}; log:\n{}",
            self.program.display(),
            self.log()
        );
    }

    fn data(&self) -> DataClient {
        DataClient::tcp(self.data_port)
    }

    fn log(&self) -> String {
        common::read_for_diagnostics(&self.run.path().join("log"))
    }

    fn shutdown(mut self) {
        assert_eq!(self.ctrl.request(SHUTDOWN, &[]).rc, 0);
        assert!(self.process.wait_exit(Duration::from_secs(10)).success());
    }

    /// GET_STATEBLOB: (result, response flags, blob).
    fn get_blob(&mut self, flags: u32, blob_type: u32) -> (u32, u32, Vec<u8>) {
        let reply = self
            .ctrl
            .request(GET_STATEBLOB, &be(&[flags, blob_type, 0]));
        let length = reply.word(4) as usize;
        assert_eq!(reply.word(8) as usize, length, "totlength == length");
        (reply.rc, reply.word(0), reply.body[12..].to_vec())
    }

    fn set_blob(&mut self, flags: u32, blob_type: u32, blob: &[u8]) -> u32 {
        self.ctrl.send_raw(&request_bytes(
            SET_STATEBLOB,
            &be(&[flags, blob_type, blob.len() as u32]),
        ));
        self.ctrl.send_raw(blob);
        self.ctrl.read_reply(SET_STATEBLOB).rc
    }
}

fn new_state_dir(parent: &tempfile::TempDir, name: &str) -> PathBuf {
    let dir = parent.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    dir
}

fn header_flags(blob: &[u8]) -> u16 {
    u16::from_be_bytes([blob[4], blob[5]])
}

/// The value of the first TLV record with `tag` in `records` (swtpm's blob layout).
fn record(mut records: &[u8], tag: u16) -> Option<&[u8]> {
    while records.len() >= 6 {
        let len = u32::from_be_bytes(records[2..6].try_into().unwrap()) as usize;
        let value = records.get(6..6 + len)?;
        if u16::from_be_bytes([records[0], records[1]]) == tag {
            return Some(value);
        }
        records = &records[6 + len..];
    }
    None
}

/// A state file encrypted with a key of `key_bytes`: flags, records 2/3/6 and no plain
/// record, with an IV as long as the key.
fn assert_encrypted_file(path: &Path, key_bytes: usize) {
    let bytes = std::fs::read(path).unwrap();
    let expected_flags = if key_bytes == 32 { 0x0009 } else { 0x0001 };
    assert_eq!(header_flags(&bytes), expected_flags, "{}", path.display());
    let records = &bytes[10..];
    assert!(
        record(records, 1).is_none(),
        "no plain data in {}",
        path.display()
    );
    assert!(record(records, 2).is_some() && record(records, 3).is_some());
    assert_eq!(record(records, 6).map(<[u8]>::len), Some(key_bytes));
}

// ---------------------------------------------------------------------------------------
// State files: written by one, used by the other, and back
// ---------------------------------------------------------------------------------------

/// TPM 2: NV contents and the primary key (equal only if the seeds came along) survive
/// first → second → first, each writing changes; every file stays encrypted.
fn tpm2_state_swap(first: &Path, second: &Path, keys: &Keys, key_bytes: usize) {
    let tmp = common::short_tempdir();
    let state = new_state_dir(&tmp, "state");
    let permall = state.join("tpm2-00.permall");

    let mut a = Daemon::start(first, true, &state, keys);
    a.init(0);
    let mut data = a.data();
    data.startup(StartupType::Clear).unwrap();
    data.nv_define_space(NV_INDEX, NV_LEN, common::tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    data.nv_write(NV_INDEX, 0, b"written by the first one")
        .unwrap();
    let primary = primary_public(&mut data);
    data.shutdown(StartupType::Clear).unwrap();
    drop(data);
    a.shutdown();
    assert_encrypted_file(&permall, key_bytes);

    let mut b = Daemon::start(second, true, &state, keys);
    b.init(0);
    let mut data = b.data();
    data.startup(StartupType::Clear).unwrap();
    assert_eq!(
        data.nv_read(NV_INDEX, 0, NV_LEN).unwrap(),
        b"written by the first one"
    );
    assert_eq!(primary_public(&mut data), primary, "same seeds");
    data.nv_write(NV_INDEX, 0, b"changed by the other one")
        .unwrap();
    data.shutdown(StartupType::Clear).unwrap();
    drop(data);
    b.shutdown();
    assert_encrypted_file(&permall, key_bytes);

    let mut c = Daemon::start(first, true, &state, keys);
    c.init(0);
    let mut data = c.data();
    data.startup(StartupType::Clear).unwrap();
    assert_eq!(
        data.nv_read(NV_INDEX, 0, NV_LEN).unwrap(),
        b"changed by the other one"
    );
    drop(data);
    c.shutdown();
}

fn primary_public(data: &mut DataClient) -> Vec<u8> {
    let created = data.create_primary(StorageKey::EccP256).unwrap();
    data.flush_context(created.handle).unwrap();
    created.key.public
}

/// Both directions for one key configuration.
fn tpm2_state_both_ways(keys: &Keys, key_bytes: usize) {
    tpm2_state_swap(&debian_swtpm(), &vtpm_swtpm(), keys, key_bytes);
    tpm2_state_swap(&vtpm_swtpm(), &debian_swtpm(), keys, key_bytes);
}

#[test]
fn tpm2_state_aes128_hex_key_file() {
    let files = KeyFiles::new();
    tpm2_state_both_ways(&Keys::state(files.file("hex128", "")), 16);
}

#[test]
fn tpm2_state_aes256_hex_key_file() {
    let files = KeyFiles::new();
    let keys = Keys::state(files.file("hex256", ",mode=aes-256-cbc,format=hex"));
    tpm2_state_both_ways(&keys, 32);
}

#[test]
fn tpm2_state_pbkdf2_passphrase_file() {
    let files = KeyFiles::new();
    tpm2_state_both_ways(&Keys::state(files.pwdfile("")), 16);
}

#[test]
fn tpm2_state_sha512_passphrase_file_aes256() {
    let files = KeyFiles::new();
    let keys = Keys::state(files.pwdfile(",kdf=sha512,mode=aes-256-cbc"));
    tpm2_state_both_ways(&keys, 32);
}

#[test]
fn tpm2_state_passphrase_from_a_pipe_as_libvirt_passes_it() {
    let keys = Keys {
        key: Some("pwdfd=3,mode=aes-256-cbc".into()),
        fd3: Some(b"libvirt secret".to_vec()),
        ..Keys::default()
    };
    tpm2_state_both_ways(&keys, 32);
}

#[test]
fn tpm2_state_binary_key_from_a_pipe() {
    let keys = Keys {
        key: Some("fd=3,format=binary".into()),
        fd3: Some(vec![0x5a; 16]),
        ..Keys::default()
    };
    tpm2_state_both_ways(&keys, 16);
}

/// TPM 1.2: the permanent state and the savestate, both encrypted, carry PCRs over.
fn tpm12_state_swap(first: &Path, second: &Path, keys: &Keys) {
    let tmp = common::short_tempdir();
    let state = new_state_dir(&tmp, "state");
    let mut a = Daemon::start(first, false, &state, keys);
    a.init(0);
    let mut data = a.data();
    assert_eq!(
        tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_CLEAR))),
        0
    );
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::extend(10, [0xa5; 20]))), 0);
    let pcr10 = tpm12_pcr(&mut data, 10);
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::SAVE_STATE)), 0);
    drop(data);
    a.shutdown();
    assert_encrypted_file(&state.join("tpm-00.permall"), 32);
    assert_encrypted_file(&state.join("tpm-00.savestate"), 32);

    let mut b = Daemon::start(second, false, &state, keys);
    b.init(0);
    let mut data = b.data();
    assert_eq!(
        tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_STATE))),
        0
    );
    assert_eq!(
        tpm12_pcr(&mut data, 10),
        pcr10,
        "restored from the savestate"
    );
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::extend(11, [0x5a; 20]))), 0);
    let pcr11 = tpm12_pcr(&mut data, 11);
    assert_eq!(tpm12::rc(&data.transmit(&tpm12::SAVE_STATE)), 0);
    drop(data);
    b.shutdown();
    assert_encrypted_file(&state.join("tpm-00.savestate"), 32);

    let mut c = Daemon::start(first, false, &state, keys);
    c.init(0);
    let mut data = c.data();
    assert_eq!(
        tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_STATE))),
        0
    );
    assert_eq!(tpm12_pcr(&mut data, 11), pcr11);
    drop(data);
    c.shutdown();
}

fn tpm12_pcr(data: &mut DataClient, pcr: u32) -> Vec<u8> {
    let response = data.transmit(&tpm12::pcr_read(pcr));
    assert_eq!(tpm12::rc(&response), 0, "TPM_PCRRead");
    response[10..30].to_vec()
}

#[test]
fn tpm12_state_aes256_binary_key_file() {
    let files = KeyFiles::new();
    let keys = Keys::state(files.file("bin256", ",format=binary,mode=aes-256-cbc"));
    tpm12_state_swap(&debian_swtpm(), &vtpm_swtpm(), &keys);
    tpm12_state_swap(&vtpm_swtpm(), &debian_swtpm(), &keys);
}

// ---------------------------------------------------------------------------------------
// Migration blobs
// ---------------------------------------------------------------------------------------

/// Blobs taken from `source` with GET_STATEBLOB(`get_flags`) are loaded into `target`
/// (configured with the same keys) with the flags the response carried, as QEMU does.
fn tpm2_blob_transfer(source: &Path, target: &Path, keys: &Keys, get_flags: u32, expect: u32) {
    let tmp = common::short_tempdir();
    let mut a = Daemon::start(source, true, &new_state_dir(&tmp, "a"), keys);
    a.init(0);
    let mut data = a.data();
    data.startup(StartupType::Clear).unwrap();
    data.nv_define_space(NV_INDEX, NV_LEN, common::tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    data.nv_write(NV_INDEX, 0, b"migrated in an encrypted")
        .unwrap();
    let loaded = data.create_primary(StorageKey::EccP256).unwrap();
    let mut blobs = Vec::new();
    for blob_type in [1, 2] {
        let (rc, flags, blob) = a.get_blob(get_flags, blob_type);
        assert_eq!(
            (rc, flags),
            (0, expect),
            "GET_STATEBLOB {blob_type} from {}",
            source.display()
        );
        blobs.push((blob_type, flags, blob));
    }

    let mut b = Daemon::start(target, true, &new_state_dir(&tmp, "b"), keys);
    assert_eq!(b.ctrl.request(STOP, &[]).rc, 0);
    for (blob_type, flags, blob) in &blobs {
        let rc = b.set_blob(*flags, *blob_type, blob);
        assert_eq!(
            rc,
            0,
            "SET_STATEBLOB {blob_type} into {}; log:\n{}",
            target.display(),
            b.log()
        );
    }
    b.init(1);
    let mut data = b.data();
    assert_eq!(
        data.read_public(loaded.handle).unwrap().public,
        loaded.key.public,
        "the transient key came along in the volatile state"
    );
    assert_eq!(
        data.nv_read(NV_INDEX, 0, NV_LEN).unwrap(),
        b"migrated in an encrypted"
    );
    drop(data);
    b.shutdown();
}

fn tpm2_blobs_both_ways(keys: &Keys, get_flags: u32, expect: u32) {
    tpm2_blob_transfer(&debian_swtpm(), &vtpm_swtpm(), keys, get_flags, expect);
    tpm2_blob_transfer(&vtpm_swtpm(), &debian_swtpm(), keys, get_flags, expect);
}

#[test]
fn blobs_under_a_migration_key() {
    let files = KeyFiles::new();
    tpm2_blobs_both_ways(&Keys::migration(files.file("hex128", "")), 0, 0);
}

#[test]
fn blobs_under_state_and_migration_keys_stay_state_encrypted() {
    let files = KeyFiles::new();
    let keys = Keys::both(
        files.file("hex256", ",mode=aes-256-cbc"),
        files.pwdfile(",mode=aes-256-cbc"),
    );
    tpm2_blobs_both_ways(&keys, 0, STATE_FLAG_ENCRYPTED);
}

#[test]
fn decrypted_blobs_under_a_migration_key_from_a_pipe() {
    let files = KeyFiles::new();
    let keys = Keys {
        key: Some(files.file("hex128", "")),
        migration_key: Some("pwdfd=3".into()),
        fd3: Some(b"migration passphrase\n".to_vec()),
    };
    tpm2_blobs_both_ways(&keys, STATE_FLAG_DECRYPTED, 0);
}

/// Response flags, blob sizes and header flags of GET_STATEBLOB(permanent) match
/// swtpm's for each key configuration, with and without DECRYPTED; a blob that carries
/// encryption differs from one request to the next (fresh IVs).
#[test]
fn get_stateblob_flags_and_sizes_match_swtpm() {
    let files = KeyFiles::new();
    let configs = [
        Keys::default(),
        Keys::state(files.file("hex128", "")),
        Keys::migration(files.file("hex128", "")),
        Keys::both(files.file("hex128", ""), files.pwdfile("")),
        Keys::both(
            files.file("hex256", ",mode=aes-256-cbc"),
            files.pwdfile(",kdf=sha512,mode=aes-256-cbc"),
        ),
    ];
    for keys in &configs {
        let tmp = common::short_tempdir();
        let mut seen = Vec::new();
        for program in [debian_swtpm(), vtpm_swtpm()] {
            let mut daemon = Daemon::start(&program, true, &new_state_dir(&tmp, "s"), keys);
            daemon.init(0);
            let mut answers = Vec::new();
            for flags in [0, STATE_FLAG_DECRYPTED] {
                let (rc, response_flags, first) = daemon.get_blob(flags, 1);
                let (_, _, second) = daemon.get_blob(flags, 1);
                let encrypted = header_flags(&first) & 0x3 != 0;
                assert_eq!(first != second, encrypted, "fresh IVs: {keys:?} {flags}");
                answers.push((rc, response_flags, first.len(), header_flags(&first)));
            }
            seen.push(answers);
            daemon.shutdown();
            std::fs::remove_dir_all(tmp.path().join("s")).unwrap();
        }
        assert_eq!(seen[0], seen[1], "swtpm vs vtpm for {keys:?}");
    }
}

/// swtpm 0.7.1 cannot make blobs when the two keys differ in size (it keeps one IV
/// buffer for both); vtpm can, with each IV as long as its own key, and swtpm loads
/// what vtpm makes.
#[test]
fn mixed_key_sizes_work_and_load_into_swtpm() {
    let files = KeyFiles::new();
    let keys = Keys::both(
        files.file("hex256", ",mode=aes-256-cbc"),
        files.file("hex128-other", ""),
    );
    let tmp = common::short_tempdir();
    let state = new_state_dir(&tmp, "a");
    let mut a = Daemon::start(&vtpm_swtpm(), true, &state, &keys);
    a.init(0);
    let mut data = a.data();
    data.startup(StartupType::Clear).unwrap();
    data.nv_define_space(NV_INDEX, NV_LEN, common::tpm2::NV_OWNER_RW_NO_DA)
        .unwrap();
    let (rc, flags, permanent) = a.get_blob(0, 1);
    assert_eq!((rc, flags, header_flags(&permanent)), (0, 2, 0x000F));
    assert_eq!(record(&permanent[10..], 7).map(<[u8]>::len), Some(16));
    // State files are still written (with a 32-byte IV) after the 128-bit encryption.
    data.nv_write(NV_INDEX, 0, b"after a mixed-size blob!")
        .unwrap();
    assert_encrypted_file(&state.join("tpm2-00.permall"), 32);
    let (_, _, permanent) = a.get_blob(0, 1);
    drop(data);
    a.shutdown();

    let mut b = Daemon::start(&debian_swtpm(), true, &new_state_dir(&tmp, "b"), &keys);
    assert_eq!(b.ctrl.request(STOP, &[]).rc, 0);
    assert_eq!(b.set_blob(STATE_FLAG_ENCRYPTED, 1, &permanent), 0);
    b.init(0);
    let mut data = b.data();
    data.startup(StartupType::Clear).unwrap();
    assert_eq!(
        data.nv_read(NV_INDEX, 0, NV_LEN).unwrap(),
        b"after a mixed-size blob!"
    );
}

#[test]
fn get_config_reports_the_keys_as_swtpm_does() {
    let files = KeyFiles::new();
    let configs = [
        (Keys::default(), 0),
        (Keys::state(files.file("hex128", "")), 1),
        (Keys::migration(files.pwdfile("")), 2),
        (Keys::both(files.pwdfile(""), files.file("hex128", "")), 3),
    ];
    let tmp = common::short_tempdir();
    for (keys, expected) in &configs {
        for program in [debian_swtpm(), vtpm_swtpm()] {
            let mut daemon = Daemon::start(&program, true, tmp.path(), keys);
            let reply = daemon.ctrl.request(GET_CONFIG, &[]);
            assert_eq!(reply.wire(), be(&[0, *expected]), "{}", program.display());
            daemon.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wrong keys, missing keys, tampered files and blobs
// ---------------------------------------------------------------------------------------

/// Snapshot of the state files of a directory, to show that nothing was written.
fn state_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name() != ".lock")
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// INIT on `state` with `keys` fails with the same result in swtpm and vtpm, leaves the
/// files alone, and vtpm's log names the file and says `why`.
fn init_fails_alike(tpm2: bool, state: &Path, keys: &Keys, expected_rc: u32, why: &str) {
    let before = state_files(state);
    for program in [debian_swtpm(), vtpm_swtpm()] {
        let mut daemon = Daemon::start(&program, tpm2, state, keys);
        assert_eq!(
            daemon.init_rc(0),
            expected_rc,
            "{} with {keys:?}; log:\n{}",
            program.display(),
            daemon.log()
        );
        let log = daemon.log();
        let is_vtpm = daemon.is_vtpm();
        daemon.shutdown();
        assert_eq!(
            state_files(state),
            before,
            "{} changed the files",
            program.display()
        );
        if is_vtpm {
            let file = if tpm2 {
                "tpm2-00.permall"
            } else {
                "tpm-00.permall"
            };
            assert!(log.contains(file) && log.contains(why), "log:\n{log}");
            assert!(log.contains("left unchanged"), "log:\n{log}");
        }
    }
}

/// Makes a state directory with `keys` (written by vtpm: the swaps above show that
/// swtpm's is the same).
fn make_state(tmp: &tempfile::TempDir, name: &str, tpm2: bool, keys: &Keys) -> PathBuf {
    let state = new_state_dir(tmp, name);
    let mut daemon = Daemon::start(&vtpm_swtpm(), tpm2, &state, keys);
    daemon.init(0);
    daemon.shutdown();
    state
}

fn bad_keys_on_load(tpm2: bool) {
    let files = KeyFiles::new();
    let tmp = common::short_tempdir();
    let right = Keys::state(files.file("hex128", ""));
    let state = make_state(&tmp, "encrypted", tpm2, &right);
    let plain = make_state(&tmp, "plain", tpm2, &Keys::default());
    // TPM 1.2 passes the store's result through INIT; a TPM 2 goes to failure mode.
    let rc = |tpm12_rc| if tpm2 { TPM_RC_FAILURE } else { tpm12_rc };

    let wrong = Keys::state(files.file("hex128-other", ""));
    init_fails_alike(
        tpm2,
        &state,
        &wrong,
        rc(TPM_DECRYPT_ERROR),
        "wrong key or tampered data",
    );
    init_fails_alike(
        tpm2,
        &state,
        &Keys::default(),
        rc(TPM_FAIL),
        "no state key (--key) is configured",
    );
    let longer = Keys::state(files.file("hex256", ",mode=aes-256-cbc"));
    init_fails_alike(
        tpm2,
        &state,
        &longer,
        rc(TPM_BAD_KEY_PROPERTY),
        "needs a 128-bit state key",
    );
    init_fails_alike(tpm2, &plain, &right, rc(TPM_FAIL), "is not encrypted");

    let permall = state.join(if tpm2 {
        "tpm2-00.permall"
    } else {
        "tpm-00.permall"
    });
    let good = std::fs::read(&permall).unwrap();
    let mut tampered = good.clone();
    tampered[good.len() / 2] ^= 0x01;
    std::fs::write(&permall, &tampered).unwrap();
    init_fails_alike(
        tpm2,
        &state,
        &right,
        rc(TPM_DECRYPT_ERROR),
        "wrong key or tampered data",
    );

    // The right key still opens the untouched file.
    std::fs::write(&permall, &good).unwrap();
    let mut daemon = Daemon::start(&vtpm_swtpm(), tpm2, &state, &right);
    daemon.init(0);
    daemon.shutdown();
}

#[test]
fn tpm12_wrong_missing_and_mismatched_keys_and_tampering_on_load() {
    bad_keys_on_load(false);
}

#[test]
fn tpm2_wrong_missing_and_mismatched_keys_and_tampering_on_load() {
    bad_keys_on_load(true);
}

/// A blob SET_STATEBLOB must refuse, and how.
struct BlobCase<'a> {
    what: &'a str,
    /// The keys of the daemon that gets the blob.
    keys: Keys,
    /// The request's state flags.
    flags: u32,
    blob: &'a [u8],
    /// swtpm's result (and so vtpm's).
    expected: u32,
    /// What vtpm's log says about it.
    why: &'a str,
}

/// SET_STATEBLOB refuses blobs it cannot open with swtpm's result codes, changes no
/// file, and the daemon still starts from its own state afterwards.
#[test]
fn bad_blobs_are_refused_as_swtpm_refuses_them() {
    let files = KeyFiles::new();
    let tmp = common::short_tempdir();
    let state_key = files.file("hex128", "");
    let migration_key = files.pwdfile("");
    let source_keys = Keys::both(state_key.clone(), migration_key.clone());
    let mut source = Daemon::start(
        &vtpm_swtpm(),
        true,
        &new_state_dir(&tmp, "src"),
        &source_keys,
    );
    source.init(0);
    let (_, _, encrypted) = source.get_blob(0, 1);
    assert_eq!(header_flags(&encrypted), 0x0007);
    source.shutdown();
    let mut plain_source = Daemon::start(
        &vtpm_swtpm(),
        true,
        &new_state_dir(&tmp, "plain"),
        &Keys::default(),
    );
    plain_source.init(0);
    let (_, _, plain) = plain_source.get_blob(0, 1);
    plain_source.shutdown();
    let mut tampered = encrypted.clone();
    tampered[encrypted.len() / 2] ^= 0x80;

    let cases = [
        BlobCase {
            what: "no migration key",
            keys: Keys::state(state_key.clone()),
            flags: 0,
            blob: &encrypted,
            expected: TPM_KEYNOTFOUND,
            why: "none is configured",
        },
        BlobCase {
            what: "wrong migration key",
            keys: Keys::both(state_key.clone(), files.file("hex128-other", "")),
            flags: 0,
            blob: &encrypted,
            expected: TPM_DECRYPT_ERROR,
            why: "wrong key or tampered data",
        },
        BlobCase {
            what: "256-bit migration key",
            keys: Keys::both(state_key.clone(), files.pwdfile(",mode=aes-256-cbc")),
            flags: 0,
            blob: &encrypted,
            expected: TPM_BAD_KEY_PROPERTY,
            why: "needs a 128-bit migration key",
        },
        BlobCase {
            what: "no state key",
            keys: Keys::migration(migration_key.clone()),
            flags: 0,
            blob: &encrypted,
            expected: TPM_KEYNOTFOUND,
            why: "none is configured",
        },
        BlobCase {
            what: "wrong state key",
            keys: Keys::both(files.file("hex128-other", ""), migration_key.clone()),
            flags: 0,
            blob: &encrypted,
            expected: TPM_DECRYPT_ERROR,
            why: "wrong key or tampered data",
        },
        BlobCase {
            what: "tampered blob",
            keys: source_keys.clone(),
            flags: 0,
            blob: &tampered,
            expected: TPM_DECRYPT_ERROR,
            why: "wrong key or tampered data",
        },
        BlobCase {
            what: "plain blob said to be state-encrypted",
            keys: Keys::state(state_key.clone()),
            flags: STATE_FLAG_ENCRYPTED,
            blob: &plain,
            expected: TPM_FAIL,
            why: "no encrypted data and HMAC record",
        },
        BlobCase {
            what: "state-encrypted flag without a state key",
            keys: Keys::migration(migration_key.clone()),
            flags: STATE_FLAG_ENCRYPTED,
            blob: &plain,
            expected: TPM_KEYNOTFOUND,
            why: "none is configured",
        },
    ];
    for BlobCase {
        what,
        keys,
        flags,
        blob,
        expected,
        why,
    } in cases
    {
        let state = new_state_dir(&tmp, &format!("t{}", what.replace(' ', "-")));
        for program in [debian_swtpm(), vtpm_swtpm()] {
            let mut daemon = Daemon::start(&program, true, &state, &keys);
            daemon.init(0);
            let before = state_files(&state);
            assert_eq!(daemon.ctrl.request(STOP, &[]).rc, 0);
            let rc = daemon.set_blob(flags, 1, blob);
            assert_eq!(
                rc,
                expected,
                "{what}: {}; log:\n{}",
                program.display(),
                daemon.log()
            );
            assert_eq!(
                state_files(&state),
                before,
                "{what}: {} wrote",
                program.display()
            );
            // The daemon goes on with its own state.
            daemon.init(0);
            if daemon.is_vtpm() {
                let log = daemon.log();
                assert!(
                    log.contains("refused the permall state blob") && log.contains(why),
                    "{what}; log:\n{log}"
                );
            }
            daemon.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The key options
// ---------------------------------------------------------------------------------------

/// Runs `program socket ... --key <key>` (plus `extra`) until it exits; the state
/// directory does not exist, so only the key options can make it fail at start-up.
fn run_with_key(
    program: &Path,
    run: &Path,
    key_option: &str,
    key: &str,
    fd3: Option<&[u8]>,
) -> Process {
    let args: Vec<String> = vec![
        "socket".into(),
        "--tpmstate".into(),
        format!("dir={}", run.join("nonexistent").display()),
        "--ctrl".into(),
        format!("type=unixio,path={}", run.join("ctrl").display()),
        key_option.into(),
        key.into(),
    ];
    spawn(program, &args, fd3, run).0
}

/// swtpm's messages for bad `--key` values: both exit 1 with the same stderr line (for
/// messages that end in a system error, vtpm adds the error number after swtpm's text).
#[test]
fn key_option_errors_match_swtpm() {
    let files = KeyFiles::new();
    files.write("hex-short", b"0123456789abcdef0123456789abcde\n");
    files.write("hex-34", b"0123456789abcdef0123456789abcdef01\n");
    files.write("bin-long", &[7u8; 100]);
    let path = |name: &str| files.path(name).display().to_string();
    let cases: Vec<(&str, String)> = vec![
        ("--key", format!("file={},mode=foo", path("hex128"))),
        ("--key", format!("file={},format=foo", path("hex128"))),
        ("--key", format!("{},kdf=foo", files.pwdfile(""))),
        ("--key", format!("{},format=foo", files.pwdfile(""))),
        ("--key", "mode=aes-cbc".into()),
        ("--key", "fd=-1".into()),
        ("--key", format!("file={}", path("missing"))),
        ("--key", "fd=77".into()),
        ("--key", "pwdfd=77".into()),
        ("--key", format!("file={},mode=aes-256-cbc", path("hex128"))),
        ("--key", format!("file={}", path("hex256"))),
        ("--key", format!("file={}", path("hex-short"))),
        ("--key", format!("file={},mode=aes-256-cbc", path("hex-34"))),
        ("--key", format!("file={},format=binary", path("bin256"))),
        (
            "--key",
            format!("file={},format=binary,mode=aes-256-cbc", path("bin-long")),
        ),
        ("--key", "foo=bar".into()),
        ("--key", "fd=abc".into()),
        (
            "--migration-key",
            format!("file={},mode=foo", path("hex128")),
        ),
        ("--migration-key", "foo".into()),
        ("--migration-key", format!("pwdfile={}", path("missing"))),
    ];
    for (option, value) in &cases {
        let mut stderr = Vec::new();
        for program in [debian_swtpm(), vtpm_swtpm()] {
            let run = common::short_tempdir();
            let finished = run_with_key(&program, run.path(), option, value, None)
                .finish(Duration::from_secs(10));
            assert_eq!(
                finished.status.code(),
                Some(1),
                "{option} {value}: {}",
                program.display()
            );
            stderr.push(finished.stderr.trim_end().to_string());
        }
        // swtpm writes "Unable to open file <path> : <error>" for passphrase files.
        let swtpm = stderr[0].replace(" : ", ": ");
        assert!(
            stderr[1] == swtpm || stderr[1].starts_with(&format!("{swtpm} (os error")),
            "{option} {value}:\n swtpm: {}\n vtpm:  {}",
            stderr[0],
            stderr[1]
        );
    }
}

/// A binary key that is neither 16 nor 32 bytes: swtpm starts and fails once it
/// encrypts; vtpm refuses it at start.
#[test]
fn binary_keys_of_other_lengths_are_refused_at_start() {
    let files = KeyFiles::new();
    files.write("bin20", &[1u8; 20]);
    let run = common::short_tempdir();
    let value = files.file("bin20", ",format=binary,mode=aes-256-cbc");
    let finished = run_with_key(&vtpm_swtpm(), run.path(), "--key", &value, None)
        .finish(Duration::from_secs(10));
    assert_eq!(finished.status.code(), Some(1));
    assert_eq!(
        finished.stderr.trim_end(),
        "swtpm: A binary key must be 16 or 32 bytes long, but it has 20 bytes."
    );
}

/// `remove` deletes a key file that gave a key and keeps a bad one; the passphrase fd is
/// closed after reading. Both as swtpm does.
#[test]
fn remove_and_fd_handling_match_swtpm() {
    for program in [debian_swtpm(), vtpm_swtpm()] {
        let files = KeyFiles::new();
        let tmp = common::short_tempdir();
        let keys = Keys {
            key: Some(files.file("hex128", ",remove")),
            migration_key: Some("pwdfd=3,remove=true".into()),
            fd3: Some(b"secret".to_vec()),
        };
        let mut daemon = Daemon::start(&program, true, tmp.path(), &keys);
        // The sockets exist before the keys are read: a reply shows start-up is over.
        assert_eq!(daemon.ctrl.request(GET_CONFIG, &[]).wire(), be(&[0, 3]));
        assert!(
            !files.path("hex128").exists(),
            "{} removes the key file",
            program.display()
        );
        assert!(
            !holds_pipe(daemon.process.pid(), daemon.fd3_pipe.unwrap()),
            "{} closed the passphrase pipe",
            program.display()
        );
        daemon.shutdown();

        let run = common::short_tempdir();
        let bad = files.file("hex256", ",remove");
        let finished =
            run_with_key(&program, run.path(), "--key", &bad, None).finish(Duration::from_secs(10));
        assert_eq!(finished.status.code(), Some(1));
        assert!(
            files.path("hex256").exists(),
            "{} keeps a bad key file",
            program.display()
        );
    }
}

/// A passphrase written into a pipe whose writer stays open: start-up does not wait for
/// the end of the pipe (the read that returned less than asked ends it, as in swtpm).
#[test]
fn passphrase_pipe_left_open_does_not_hang_start_up() {
    for program in [debian_swtpm(), vtpm_swtpm()] {
        passphrase_pipe_left_open(&program);
    }
}

fn passphrase_pipe_left_open(program: &Path) {
    let (reader, writer): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut writer = std::fs::File::from(writer);
    std::io::Write::write_all(&mut writer, b"still open").unwrap();
    let run = common::short_tempdir();
    let ctrl = run.path().join("ctrl");
    let args = [
        "socket",
        "--tpm2",
        "--tpmstate",
        &format!("dir={}", run.path().display()),
        "--ctrl",
        &format!("type=unixio,path={}", ctrl.display()),
        "--key",
        "pwdfd=3",
    ];
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let mut process = spawn_with_fd3(program, &args, reader, run.path());
    process.wait_unix_socket(&ctrl);
    let mut ctrl = CtrlClient::unix(&ctrl);
    assert_eq!(ctrl.request(GET_CONFIG, &[]).wire(), be(&[0, 1]));
    assert_eq!(ctrl.request(SHUTDOWN, &[]).rc, 0);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
    drop(writer);
}

/// `--print-capabilities` lists `cmdarg-key-fd` and `cmdarg-pwd-fd`, and the features
/// both lists have come in the same order.
#[test]
fn capabilities_list_the_key_fds_in_swtpms_order() {
    let features = |program: &Path| -> Vec<String> {
        let run = common::short_tempdir();
        let finished = Process::start(
            program,
            &["socket", "--tpm2", "--print-capabilities"],
            run.path(),
        )
        .finish(Duration::from_secs(10));
        assert!(finished.status.success());
        let json: serde_json::Value = serde_json::from_str(&finished.stdout).unwrap();
        json["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    let swtpm = features(&debian_swtpm());
    let vtpm = features(&vtpm_swtpm());
    for name in ["cmdarg-key-fd", "cmdarg-pwd-fd"] {
        assert!(
            swtpm.contains(&name.to_string()) && vtpm.contains(&name.to_string()),
            "{name}"
        );
    }
    let common_in = |list: &[String], other: &[String]| -> Vec<String> {
        list.iter().filter(|f| other.contains(f)).cloned().collect()
    };
    assert_eq!(common_in(&vtpm, &swtpm), common_in(&swtpm, &vtpm));
}

/// Zero IVs: what the legacy format uses.
struct ZeroIvs;

impl IvSource for ZeroIvs {
    fn fill(&mut self, iv: &mut [u8]) -> Result<(), CryptoError> {
        iv.fill(0);
        Ok(())
    }
}

/// State files with a version-1 header (written by swtpm before 0.1): the libtpms blob
/// itself, or encrypted with a zero IV over SHA-256(blob) || blob. Both daemons load
/// them, and refuse the encrypted one under another key alike.
#[test]
fn legacy_version_1_state_files_load_in_both() {
    let files = KeyFiles::new();
    let tmp = common::short_tempdir();
    let plain_dir = make_state(&tmp, "source", false, &Keys::default());
    let stored = std::fs::read(plain_dir.join("tpm-00.permall")).unwrap();
    let libtpms_blob = record(&stored[10..], 1).unwrap().to_vec();
    let version1 = |payload: &[u8]| {
        let total = (10 + payload.len()) as u32;
        [&[1, 1, 0, 10, 0, 0][..], &total.to_be_bytes(), payload].concat()
    };
    let key = vtpm::state::key::key_from_hex(b"00112233445566778899aabbccddeeff", KeySize::Aes128)
        .unwrap();
    let digested = [Sha256::digest(&libtpms_blob).as_slice(), &libtpms_blob].concat();
    let ciphertext = seal(&key, &digested, &mut ZeroIvs).unwrap().ciphertext;

    let right = Keys::state(files.file("hex128", ""));
    let wrong = Keys::state(files.file("hex128-other", ""));
    let cases = [
        (version1(&libtpms_blob), Keys::default(), 0),
        (version1(&ciphertext), right, 0),
        (version1(&ciphertext), wrong, TPM_DECRYPT_ERROR),
    ];
    for (file, keys, expected) in &cases {
        for program in [debian_swtpm(), vtpm_swtpm()] {
            let state = tmp.path().join("legacy");
            std::fs::create_dir(&state).unwrap();
            std::fs::write(state.join("tpm-00.permall"), file).unwrap();
            let mut daemon = Daemon::start(&program, false, &state, keys);
            assert_eq!(
                daemon.init_rc(0),
                *expected,
                "{} {keys:?}",
                program.display()
            );
            if *expected == 0 {
                let mut data = daemon.data();
                assert_eq!(
                    tpm12::rc(&data.transmit(&tpm12::startup(tpm12::ST_CLEAR))),
                    0
                );
            }
            daemon.shutdown();
            std::fs::remove_dir_all(&state).unwrap();
        }
    }
}
