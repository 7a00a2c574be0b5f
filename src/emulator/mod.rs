//! The TPM's life as the control and data channels see it: not running / running,
//! INIT, STOP, the automatic TPM2_Shutdown, locality, the established flag, state blobs,
//! when the storage lock is taken and handed over (migration), and the restart after a
//! failed state write. No I/O of its own besides the state store: the channels drive it.

mod host;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use host::{HostEvents, KernelRandom, StateHost};

use crate::ctrl::protocol::{self, result};
use crate::libtpms::{BufferSize, Host, StateKind, TPM_FAIL, Tpm, TpmRc};
use crate::log::error_chain;
use crate::state::blob::{self, BlobError};
use crate::state::key::AesKey;
use crate::state::{Store, StoreError};
use crate::tpm::{self, TpmVersion};
use crate::{log_error, log_info};

/// Lock retries (10 ms apart) armed once the lock was handed to a migration
/// destination: QEMU's own LOCK_STORAGE uses the same 3 s.
const RETRIES_AFTER_HANDOVER: u32 = 300;

/// How the TPM behaves, from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// `--locality reject-locality-4`.
    pub reject_locality_4: bool,
    /// `--locality allow-set-locality`: accept the vendor SetLocality command in-band.
    pub allow_set_locality: bool,
    /// `--flags disable-auto-shutdown`.
    pub disable_auto_shutdown: bool,
    /// `--migration incoming`: the storage is locked only when the state arrives
    /// (SET_STATEBLOB) or before the first TPM command, not at INIT.
    pub incoming_migration: bool,
    /// `--migration release-lock-outgoing`: hand the storage lock over once QEMU has
    /// fetched the last state blob (SAVESTATE) of an outgoing migration.
    pub release_lock_outgoing: bool,
}

/// The keys of `--key` (state files) and `--migration-key` (GET/SET_STATEBLOB blobs).
#[derive(Debug, Default)]
pub struct Keys {
    pub state: Option<AesKey>,
    pub migration: Option<AesKey>,
}

impl Keys {
    /// CMD_GET_CONFIG's flags: which keys are configured.
    pub fn config_flags(&self) -> u32 {
        let mut flags = 0;
        if self.state.is_some() {
            flags |= protocol::CONFIG_FLAG_FILE_KEY;
        }
        if self.migration.is_some() {
            flags |= protocol::CONFIG_FLAG_MIGRATION_KEY;
        }
        flags
    }
}

/// What the control channel may read without waiting for a running TPM command.
#[derive(Debug, Default)]
pub struct Status {
    running: AtomicBool,
    established: AtomicBool,
}

impl Status {
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub fn established(&self) -> bool {
        self.established.load(Ordering::Acquire)
    }
}

/// What SET_STATEBLOB asks of the daemon beyond its result.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterSetState {
    Continue,
    /// The storage lock could not be taken: swtpm answers and terminates.
    Terminate,
}

pub struct Emulator {
    /// libtpms, taken on first use: the data thread may still be opening it (after the
    /// seccomp filter) while the control channel serves commands that need no TPM.
    tpm: Option<Tpm>,
    version: TpmVersion,
    store: Option<Store>,
    keys: Keys,
    behaviour: Behaviour,
    running: bool,
    locality: u8,
    /// Set once the storage is used (first INIT or SET_STATEBLOB): from then on the
    /// lock, where enabled, is held before the TPM touches it.
    storage_in_use: bool,
    /// `--migration incoming` and no state has arrived yet: INIT does not lock.
    lock_deferred: bool,
    /// The lock was handed over to a migration destination: nothing may be written
    /// until it is taken back.
    handed_over: bool,
    /// Retries (10 ms apart) for the next time the lock is taken.
    lock_retries: u32,
    /// The state blobs GET_STATEBLOB handed out since the TPM last ran (a bit per
    /// [`StateKind`]): all three mean that an outgoing migration, or a saved VM, has
    /// the whole state, and that it lives there now.
    blobs_sent: u8,
    /// A failed write put libtpms into failure mode and it has to be restarted from
    /// the stored state (with this volatile state, when it could be saved).
    restart: Option<Restart>,
    /// What the host callbacks reported during the last libtpms call.
    events: HostEvents,
    /// Ordinal of the last TPM command, to skip the automatic TPM2_Shutdown after the
    /// client's own.
    last_ordinal: u32,
    status: Arc<Status>,
}

/// libtpms is to be restarted from the stored state after a failed write.
struct Restart {
    volatile: Vec<u8>,
}

impl Emulator {
    pub fn new(
        version: TpmVersion,
        store: Option<Store>,
        keys: Keys,
        behaviour: Behaviour,
    ) -> Emulator {
        Emulator {
            tpm: None,
            version,
            store,
            keys,
            behaviour,
            running: false,
            locality: 0,
            storage_in_use: false,
            lock_deferred: behaviour.incoming_migration,
            handed_over: false,
            lock_retries: 0,
            blobs_sent: 0,
            restart: None,
            events: HostEvents::default(),
            last_ordinal: 0,
            status: Arc::new(Status::default()),
        }
    }

    pub fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status)
    }

    pub fn version(&self) -> TpmVersion {
        self.version
    }

    /// CMD_GET_CONFIG's flags.
    pub fn config_flags(&self) -> u32 {
        self.keys.config_flags()
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn canceller(&self) -> crate::libtpms::Canceller {
        crate::libtpms::Canceller::new()
    }

    /// The store, state key and locality, for calls that do not go through libtpms.
    fn host(&mut self) -> StateHost<'_> {
        StateHost {
            store: self.store.as_mut(),
            state_key: self.keys.state.as_ref(),
            locality: self.locality,
            writable: !self.handed_over,
            in_command: false,
            events: &mut self.events,
        }
    }

    /// libtpms, taken on first use (waiting, if need be, for the data thread to have
    /// opened it); from `--log level=5` on, libtpms' own debug output joins the log,
    /// indented.
    fn tpm(&mut self) -> Result<&mut Tpm, TpmRc> {
        if self.tpm.is_none() {
            self.acquire_tpm()?;
        }
        self.tpm.as_mut().ok_or(TPM_FAIL)
    }

    /// Taken once per process: out of line, so that the hot path is only the check.
    #[cold]
    fn acquire_tpm(&mut self) -> Result<(), TpmRc> {
        let mut tpm = Tpm::acquire(self.version).map_err(|err| {
            log_error!("{}", error_chain(&err));
            TPM_FAIL
        })?;
        let level = crate::log::level();
        if let (5.., Some(fd)) = (level, crate::log::raw_fd()) {
            tpm.set_debug(fd, level - 4, &format!("{}    ", crate::log::prefix()));
        }
        self.tpm = Some(tpm);
        Ok(())
    }

    /// Stops libtpms, if it was ever taken.
    fn terminate_tpm(&mut self) {
        if let Some(tpm) = self.tpm.as_mut() {
            tpm.terminate();
        }
    }

    /// Runs `call` on libtpms with this emulator's store and locality as its host.
    fn with_tpm<T>(
        &mut self,
        call: impl FnOnce(&mut Tpm, &mut dyn Host) -> Result<T, TpmRc>,
    ) -> Result<T, TpmRc> {
        self.with_tpm_host(false, call)
    }

    fn with_tpm_host<T>(
        &mut self,
        in_command: bool,
        call: impl FnOnce(&mut Tpm, &mut dyn Host) -> Result<T, TpmRc>,
    ) -> Result<T, TpmRc> {
        if self.tpm.is_none() {
            self.acquire_tpm()?;
        }
        let Some(tpm) = self.tpm.as_mut() else {
            return Err(TPM_FAIL);
        };
        let mut host = StateHost {
            store: self.store.as_mut(),
            state_key: self.keys.state.as_ref(),
            locality: self.locality,
            writable: !self.handed_over,
            in_command,
            events: &mut self.events,
        };
        call(tpm, &mut host)
    }

    /// Publishes what the control channel reads without the lock. Not after every TPM
    /// command (it was, at the cost of a libtpms call on the hot path): only the
    /// commands that can change the established flag or the running state call it —
    /// INIT and STOP, the HASH_* commands (`_TPM_Hash_Start` sets the flag), the
    /// control channel's reset, TPM 1.2's in-band TSC_ResetEstablishmentBit, and a
    /// restart after a failed write. No other TPM 2 or TPM 1.2 command touches the flag.
    fn publish(&mut self) {
        let established = self.running
            && self
                .tpm
                .as_mut()
                .is_some_and(|tpm| tpm.established().unwrap_or(false));
        self.status
            .established
            .store(established, Ordering::Release);
        self.status.running.store(self.running, Ordering::Release);
    }

    /// Takes the storage lock (where enabled) with the armed retries.
    fn take_lock(&mut self) -> Result<(), StoreError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        store.lock(self.lock_retries)?;
        self.lock_deferred = false;
        self.handed_over = false;
        Ok(())
    }

    /// Starts libtpms (CMD_INIT, or `--flags not-need-init` at process start).
    pub fn start(&mut self) -> Result<(), TpmRc> {
        self.stop_running();
        self.storage_in_use = true;
        // The lock comes first, so that a second daemon never reads or writes the files
        // (with `--migration incoming` it comes with the state, or before a command).
        if !self.lock_deferred {
            if let Err(err) = self.take_lock() {
                log_error!("{}", error_chain(&err));
                return Err(TPM_FAIL);
            }
        }
        self.events = HostEvents::default();
        if let Err(rc) = self.with_tpm(|tpm, host| tpm.main_init(host)) {
            self.report_start_failure(rc);
            self.terminate_tpm();
            self.publish();
            return Err(rc);
        }
        self.running = true;
        self.last_ordinal = 0;
        self.blobs_sent = 0;
        log_info!("TPM {} started", self.version());
        self.publish();
        Ok(())
    }

    /// Why libtpms did not start. A blob our own checks refused was reported when it
    /// was loaded; a blob libtpms itself refused is named here, once.
    fn report_start_failure(&self, rc: TpmRc) {
        if self.events.load_failed || self.events.loaded.is_empty() {
            log_error!("could not start the TPM: libtpms answered {rc:#x}");
            return;
        }
        let version = self.tpm.as_ref().map_or(0, Tpm::library_version);
        log_error!(
            "libtpms {}.{}.{} refused the TPM state in {} (result {rc:#x}); it was left unchanged. Restore it from a backup, or move it away to start a new TPM (its keys and NV contents are then lost); state written by a newer libtpms is refused the same way",
            version >> 16,
            (version >> 8) & 0xff,
            version & 0xff,
            self.events.loaded.join(" and ")
        );
    }

    /// CMD_INIT: a power cycle of the TPM.
    pub fn init(&mut self, flags: u32) -> u32 {
        if let Err(rc) = self.start() {
            return rc;
        }
        if flags & protocol::INIT_FLAG_DELETE_VOLATILE != 0 {
            self.delete_stored_volatile();
        }
        result::TPM_SUCCESS
    }

    fn delete_stored_volatile(&mut self) {
        if self.handed_over {
            return;
        }
        if let Some(store) = self.store.as_mut() {
            if let Err(err) = store.delete(StateKind::Volatile) {
                log_error!("{}", error_chain(&err));
            }
        }
    }

    /// CMD_STOP (and the first half of CMD_SHUTDOWN): the TPM stops; the lock is kept.
    pub fn stop(&mut self) {
        self.stop_running();
    }

    fn all_blobs_sent(&self) -> bool {
        StateKind::ALL
            .into_iter()
            .all(|kind| self.blobs_sent & blob_bit(kind) != 0)
    }

    fn stop_running(&mut self) {
        if !self.running {
            return;
        }
        // After a hand-over, or once an outgoing migration has every blob, the state
        // belongs to the destination: a TPM2_Shutdown would write it here and fork it
        // (QEMU sends no STOP on a migration source, only SHUTDOWN when it quits; a
        // VM that resumes sends a TPM command first, which clears `blobs_sent`). Before
        // a restart libtpms is not running at all.
        if !self.handed_over && !self.all_blobs_sent() && self.restart.is_none() {
            self.auto_shutdown();
        }
        self.restart = None;
        self.terminate_tpm();
        self.running = false;
        self.publish();
    }

    /// A TPM 2 stopped without TPM2_Shutdown counts the stop as an attack on the next
    /// Startup (dictionary-attack lockout); send the Shutdown the client did not.
    fn auto_shutdown(&mut self) {
        if self.version() != TpmVersion::V2
            || self.behaviour.disable_auto_shutdown
            || self.last_ordinal == tpm::TPM2_CC_SHUTDOWN
        {
            return;
        }
        for shutdown_type in [tpm::TPM2_SU_STATE, tpm::TPM2_SU_CLEAR] {
            let mut command = tpm::tpm2_shutdown_command(shutdown_type);
            let rc =
                self.with_tpm(|tpm, host| tpm.process(host, &mut command).map(tpm::response_code));
            if matches!(rc, Ok(Some(0 | tpm::TPM2_RC_INITIALIZE))) {
                break;
            }
        }
        self.last_ordinal = tpm::TPM2_CC_SHUTDOWN;
    }

    /// Before each data-channel command: the storage lock must be held while the TPM
    /// runs (a deferred `--migration incoming` lock, or the lock handed over to a
    /// migration destination that QEMU did not take back). `Err`: it cannot be had,
    /// and the daemon must end (as swtpm does).
    pub fn hold_lock_for_command(&mut self) -> Result<(), StoreError> {
        let needed = self.running
            && self.storage_in_use
            && (self.handed_over
                || self
                    .store
                    .as_ref()
                    .is_some_and(|store| store.lock_enabled() && !store.is_locked()));
        if needed { self.take_lock() } else { Ok(()) }
    }

    /// Runs one TPM command and appends its response to `out`.
    pub fn process(&mut self, command: &mut [u8], out: &mut Vec<u8>) {
        let version = self.version();
        if self.running && self.restart.is_some() {
            self.restart_from_storage();
        }
        if !self.running || self.restart.is_some() {
            out.extend_from_slice(&tpm::not_running_response(version));
            return;
        }
        let Some(header) = tpm::Header::parse(command) else {
            let rc = match version {
                TpmVersion::V2 => tpm::TPM2_RC_INSUFFICIENT,
                TpmVersion::V1_2 => tpm::TPM_BAD_PARAM_SIZE,
            };
            out.extend_from_slice(&tpm::error_response(version, rc));
            return;
        };
        self.last_ordinal = header.code;
        self.blobs_sent = 0;
        if header.code == tpm::TPM_CC_SET_LOCALITY {
            out.extend_from_slice(&self.vendor_set_locality(command));
            return;
        }
        self.events.write_failed = false;
        let response_start = out.len();
        match self.with_tpm_host(true, |tpm, host| {
            tpm.process(host, command)
                .map(|resp| out.extend_from_slice(resp))
        }) {
            Ok(()) => {}
            Err(rc) => {
                log_error!(
                    "libtpms failed to process command {:#x}: {rc:#x}",
                    header.code
                );
                out.extend_from_slice(&tpm::not_running_response(version));
            }
        }
        if self.events.write_failed {
            out.truncate(response_start);
            let rc = match version {
                TpmVersion::V2 => tpm::TPM2_RC_NV_UNAVAILABLE,
                TpmVersion::V1_2 => TPM_FAIL,
            };
            out.extend_from_slice(&tpm::error_response(version, rc));
            self.after_failed_write();
            self.publish();
        } else if version == TpmVersion::V1_2 && header.code == tpm::TSC_ORD_RESET_ESTABLISHMENT_BIT
        {
            self.publish();
        }
    }

    /// A state write of a TPM command failed (a full disk, an I/O error): the guest got
    /// an error for the command and storage still holds the state from before it, but
    /// libtpms' memory has the command's changes. Restart libtpms from storage with its
    /// current volatile state (PCRs, sessions, loaded objects), so that the guest's TPM
    /// goes on as if the command had not run; if the restart fails too (it may need to
    /// write), it is tried again before each later command.
    fn after_failed_write(&mut self) {
        match self.with_tpm(|tpm, host| tpm.volatile_state(host)) {
            Ok(volatile) => {
                self.restart = Some(Restart { volatile });
                self.restart_from_storage();
            }
            Err(rc) => {
                // Without its volatile state a restarted TPM would need TPM_Startup,
                // which would reset the PCRs under a running guest: stop it instead,
                // as after a failed INIT.
                log_error!(
                    "could not save the TPM's volatile state after a failed write (libtpms answered {rc:#x}); the TPM stops until the next INIT"
                );
                self.terminate_tpm();
                self.running = false;
            }
        }
    }

    fn restart_from_storage(&mut self) {
        let Some(restart) = self.restart.take() else {
            return;
        };
        self.terminate_tpm();
        let volatile = &restart.volatile;
        let set =
            self.with_tpm(|tpm, host| tpm.set_state(host, StateKind::Volatile, Some(volatile)));
        if let Err(rc) = set {
            log_error!(
                "libtpms refused the saved volatile state ({rc:#x}); the TPM stops until the next INIT"
            );
            self.running = false;
            return;
        }
        self.events = HostEvents::default();
        match self.with_tpm(|tpm, host| tpm.main_init(host)) {
            Ok(()) => log_info!("TPM restarted from its stored state after a failed write"),
            Err(rc) => {
                log_error!(
                    "could not restart the TPM from its stored state (libtpms answered {rc:#x}); trying again before the next command"
                );
                self.terminate_tpm();
                self.restart = Some(restart);
            }
        }
    }

    /// Sends a command of the daemon's own (`--flags startup-*`) and returns its code.
    pub fn send_own_command(&mut self, command: &[u8]) -> Option<u32> {
        let mut command = command.to_vec();
        let mut out = Vec::new();
        self.process(&mut command, &mut out);
        tpm::response_code(&out)
    }

    /// The Linux vTPM proxy's in-band SetLocality (vendor command 0x20001000).
    fn vendor_set_locality(&mut self, command: &[u8]) -> [u8; tpm::HEADER_LEN] {
        let version = self.version();
        if !self.behaviour.allow_set_locality {
            return tpm::not_running_response(version);
        }
        let (insufficient, bad_locality) = match version {
            TpmVersion::V2 => (tpm::TPM2_RC_INSUFFICIENT, tpm::TPM2_RC_LOCALITY),
            TpmVersion::V1_2 => (tpm::TPM_BAD_PARAM_SIZE, tpm::TPM_BAD_LOCALITY),
        };
        let Some(&locality) = command.get(tpm::HEADER_LEN) else {
            return tpm::error_response(version, insufficient);
        };
        if locality > 4 || (locality == 4 && self.behaviour.reject_locality_4) {
            return tpm::error_response(version, bad_locality);
        }
        self.locality = locality;
        tpm::error_response(version, 0)
    }

    /// The locality of the TCG send-command prefix: stored as is, as swtpm does.
    pub fn set_locality_unchecked(&mut self, locality: u8) {
        self.locality = locality;
    }

    /// CMD_SET_LOCALITY.
    pub fn set_locality(&mut self, locality: u8) -> u32 {
        if locality > 4 || (locality == 4 && self.behaviour.reject_locality_4) {
            return result::TPM_BAD_LOCALITY;
        }
        self.locality = locality;
        result::TPM_SUCCESS
    }

    /// CMD_RESET_TPMESTABLISHED: libtpms allows it from locality 3 or 4 only.
    pub fn reset_established(&mut self, locality: u8) -> u32 {
        if locality > 4 {
            return result::TPM_BAD_LOCALITY;
        }
        self.blobs_sent = 0;
        let saved = std::mem::replace(&mut self.locality, locality);
        let rc = self.with_tpm(|tpm, host| tpm.reset_established(host));
        self.locality = saved;
        self.publish();
        rc.err().unwrap_or(result::TPM_SUCCESS)
    }

    pub fn hash_start(&mut self) -> u32 {
        self.blobs_sent = 0;
        let rc = self.with_tpm(|tpm, host| tpm.hash_start(host));
        self.publish();
        rc.err().unwrap_or(result::TPM_SUCCESS)
    }

    pub fn hash_data(&mut self, data: &[u8]) -> u32 {
        self.blobs_sent = 0;
        self.with_tpm(|tpm, host| tpm.hash_data(host, data))
            .err()
            .unwrap_or(result::TPM_SUCCESS)
    }

    pub fn hash_end(&mut self) -> u32 {
        self.blobs_sent = 0;
        let rc = self.with_tpm(|tpm, host| tpm.hash_end(host));
        self.publish();
        rc.err().unwrap_or(result::TPM_SUCCESS)
    }

    /// CMD_STORE_VOLATILE: the next INIT resumes from the stored volatile state.
    pub fn store_volatile(&mut self) -> u32 {
        if self.restart.is_some() {
            return result::TPM_FAIL;
        }
        let volatile = match self.with_tpm(|tpm, host| tpm.volatile_state(host)) {
            Ok(volatile) => volatile,
            Err(rc) => return rc,
        };
        self.host()
            .store(StateKind::Volatile, &volatile)
            .err()
            .unwrap_or(result::TPM_SUCCESS)
    }

    /// CMD_GET_STATEBLOB on a running TPM: the whole blob from `offset`, in the 16-byte
    /// header form (also for errors). The blob stays encrypted with the state key unless
    /// `flags` has DECRYPTED; the migration key, when configured, always applies.
    pub fn get_state_blob(&mut self, flags: u32, blob_type: u32, offset: u32) -> Vec<u8> {
        let response = self.state_blob_response(flags, blob_type, offset);
        let handed_out = matches!(
            result_word(&response),
            Some(result::TPM_SUCCESS | result::TPM_RETRY)
        );
        if let (true, Some(kind)) = (handed_out, StateKind::from_blob_type(blob_type)) {
            self.blobs_sent |= blob_bit(kind);
        }
        if blob_type == protocol::BLOB_TYPE_SAVESTATE && self.behaviour.release_lock_outgoing {
            self.hand_over_lock();
        }
        response
    }

    /// QEMU fetches the savestate blob last: the outgoing migration has all the state
    /// now, and a destination on the same storage will want the lock. The permanent
    /// state must be complete and durable on storage before we let go (every write
    /// already is; this also flushes what an earlier process may have left cached, and
    /// checks that it can be read back): the destination reads it right away.
    ///
    /// Without locking (a linear file without `lock`) the storage is handed over all the
    /// same: nothing is written until LOCK_STORAGE or the next TPM command takes it back.
    fn hand_over_lock(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if self.handed_over || (store.lock_enabled() && !store.is_locked()) {
            return;
        }
        let ready = store.sync().and_then(|()| store.load(StateKind::Permanent));
        let what = store.describe(StateKind::Permanent);
        match ready {
            Ok(Some(stored)) if blob::unwrap_stored(&stored, self.keys.state.as_ref()).is_ok() => {
                store.unlock();
                self.handed_over = true;
                self.lock_retries = RETRIES_AFTER_HANDOVER;
                log_info!("storage lock released for the migration destination");
            }
            Ok(_) => log_error!(
                "kept the storage lock: the permanent TPM state {what} is missing or unreadable, so a migration destination could not use it"
            ),
            Err(err) => log_error!("kept the storage lock: {}", error_chain(&err)),
        }
    }

    fn state_blob_response(&mut self, flags: u32, blob_type: u32, offset: u32) -> Vec<u8> {
        let state = match StateKind::from_blob_type(blob_type) {
            None => Err(result::TPM_FAIL),
            Some(StateKind::Volatile) => self.current_volatile_state(),
            Some(kind) => match self.host().load(kind) {
                Ok(Some(state)) => Ok(state),
                Ok(None) => Err(result::TPM_RETRY),
                Err(rc) => Err(rc),
            },
        };
        let state = match state {
            Ok(state) => state,
            Err(rc) => return protocol::stateblob_response(rc, 0, &[]),
        };
        let state_key = match flags & protocol::STATE_FLAG_DECRYPTED {
            0 => self.keys.state.as_ref(),
            _ => None,
        };
        match blob::wrap_migration(
            &state,
            state_key,
            self.keys.migration.as_ref(),
            &mut KernelRandom,
        ) {
            Ok(blob) => {
                let response_flags = match state_key {
                    Some(_) => protocol::STATE_FLAG_ENCRYPTED,
                    None => 0,
                };
                let from = (offset as usize).min(blob.len());
                protocol::stateblob_response(result::TPM_SUCCESS, response_flags, &blob[from..])
            }
            Err(err) => {
                log_error!("could not make the state blob: {err}");
                protocol::stateblob_response(err.result_code(), 0, &[])
            }
        }
    }

    /// The volatile state as of now. swtpm stores it and deletes it again; any stored
    /// volatile state is likewise gone afterwards.
    fn current_volatile_state(&mut self) -> Result<Vec<u8>, TpmRc> {
        let state = self.with_tpm(|tpm, host| tpm.volatile_state(host));
        self.delete_stored_volatile();
        state
    }

    /// CMD_SET_STATEBLOB on a stopped TPM: libtpms keeps the blob for the next INIT.
    pub fn set_state_blob(
        &mut self,
        blob_type: u32,
        flags: u32,
        data: &[u8],
    ) -> (u32, AfterSetState) {
        // The state arrives: from here on it is ours (a `--migration incoming`
        // destination takes the lock now).
        self.storage_in_use = true;
        if let Err(err) = self.take_lock() {
            log_error!("{}", error_chain(&err));
            return (result::TPM_IOERROR, AfterSetState::Terminate);
        }
        let Some(kind) = StateKind::from_blob_type(blob_type) else {
            return (result::TPM_BAD_PARAMETER, AfterSetState::Continue);
        };
        let rc = if blob::is_empty_blob(data) {
            self.with_tpm(|tpm, host| tpm.set_state(host, kind, None))
        } else {
            match blob::unwrap_migration(
                data,
                flags & protocol::STATE_FLAG_ENCRYPTED != 0,
                self.keys.state.as_ref(),
                self.keys.migration.as_ref(),
            ) {
                Ok(state) => self.with_tpm(|tpm, host| tpm.set_state(host, kind, Some(&state))),
                Err(err) => {
                    log_set_state_refused(kind, &err);
                    Err(err.result_code())
                }
            }
        };
        (
            rc.err().unwrap_or(result::TPM_SUCCESS),
            AfterSetState::Continue,
        )
    }

    /// CMD_SET_BUFFERSIZE: 0 queries; other values only while the TPM is stopped.
    pub fn set_buffer_size(&mut self, size: u32) -> Result<BufferSize, u32> {
        if size != 0 && self.running {
            return Err(result::TPM_BAD_ORDINAL);
        }
        Ok(self.tpm()?.set_buffer_size(size))
    }

    /// CMD_GET_INFO: libtpms' JSON text, from `offset`, as the full response.
    pub fn get_info(&mut self, flags: u64, offset: u32) -> Vec<u8> {
        // libtpms takes the flags as a 32-bit C enum.
        match self.tpm().ok().and_then(|tpm| tpm.info(flags as u32)) {
            Some(text) => {
                let mut with_nul = text.into_bytes();
                with_nul.push(0);
                protocol::info_response(&with_nul, offset)
            }
            None => protocol::words([result::TPM_SIZE]),
        }
    }

    /// CMD_LOCK_STORAGE: (re)takes the lock, trying `retries` more times 10 ms apart.
    /// Before the storage is first used there is nothing to lock yet.
    /// QEMU sends it when a VM resumes on the source after a failed migration.
    pub fn lock_storage(&mut self, retries: u32) -> u32 {
        self.lock_retries = retries;
        if !self.storage_in_use {
            return result::TPM_SUCCESS;
        }
        match self.take_lock() {
            Ok(()) => result::TPM_SUCCESS,
            Err(err) => {
                log_error!("{}", error_chain(&err));
                result::TPM_FAIL
            }
        }
    }

    /// Stops the TPM for good before the process exits, sending TPM2_Shutdown if due.
    pub fn finish(&mut self) {
        self.stop_running();
    }

    /// libtpms' JSON info text (for `--print-info` and the capabilities).
    pub fn info_text(&mut self, flags: u32) -> Option<String> {
        self.tpm().ok()?.info(flags)
    }
}

/// The bit of `kind` in [`Emulator::blobs_sent`].
fn blob_bit(kind: StateKind) -> u8 {
    match kind {
        StateKind::Permanent => 1,
        StateKind::Volatile => 2,
        StateKind::SaveState => 4,
    }
}

/// The result word at the start of a control response.
fn result_word(response: &[u8]) -> Option<u32> {
    let word = response.get(..4)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// The log line for a refused SET_STATEBLOB; nothing was stored.
fn log_set_state_refused(kind: StateKind, err: &BlobError) {
    log_error!(
        "refused the {} state blob: {err}; the TPM state was not changed",
        kind.name()
    );
}

impl StateKind {
    /// The blob type numbers of GET/SET_STATEBLOB.
    pub fn from_blob_type(blob_type: u32) -> Option<StateKind> {
        match blob_type {
            protocol::BLOB_TYPE_PERMANENT => Some(StateKind::Permanent),
            protocol::BLOB_TYPE_VOLATILE => Some(StateKind::Volatile),
            protocol::BLOB_TYPE_SAVESTATE => Some(StateKind::SaveState),
            _ => None,
        }
    }
}
