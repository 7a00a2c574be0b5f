//! The host side of libtpms' callbacks during one library call: the state store (with
//! the state key), the locality, and what happened (loads, refused blobs, failed
//! writes) for the emulator to act on afterwards.

use crate::libtpms::{Host, StateKind, TPM_FAIL, TpmRc};
use crate::log::error_chain;
use crate::log_error;
use crate::state::Store;
use crate::state::blob;
use crate::state::crypto::{CryptoError, IvSource};
use crate::state::key::AesKey;

/// IVs from the kernel's random generator: a fresh one for every encryption.
pub(super) struct KernelRandom;

impl IvSource for KernelRandom {
    fn fill(&mut self, iv: &mut [u8]) -> Result<(), CryptoError> {
        getrandom::fill(iv).map_err(|err| CryptoError::Random(err.to_string()))
    }
}

/// What happened in the host callbacks during one libtpms call.
#[derive(Default)]
pub(super) struct HostEvents {
    /// A store or delete failed.
    pub(super) write_failed: bool,
    /// Loading a blob failed in the host (and was reported there, once per blob).
    pub(super) load_failed: bool,
    pub(super) refused: Vec<String>,
    /// Where the blobs libtpms loaded came from, each once (libtpms loads the
    /// permanent state twice at start).
    pub(super) loaded: Vec<String>,
}

/// Gives libtpms the state store and the current locality during a library call.
pub(super) struct StateHost<'a> {
    pub(super) store: Option<&'a mut Store>,
    /// State files are written encrypted with it, and must be encrypted to load.
    pub(super) state_key: Option<&'a AesKey>,
    pub(super) locality: u8,
    /// False while the lock is handed over to a migration destination.
    pub(super) writable: bool,
    /// Inside a TPM command: a failed write is reported to libtpms as done (see
    /// [`Emulator::process`]).
    pub(super) in_command: bool,
    pub(super) events: &'a mut HostEvents,
}

impl Host for StateHost<'_> {
    fn nvram_init(&mut self) -> Result<(), TpmRc> {
        match self.store {
            Some(_) => Ok(()),
            None => {
                log_error!(
                    "no TPM state location: give --tpmstate dir=<directory> or set TPM_PATH"
                );
                Err(TPM_FAIL)
            }
        }
    }

    fn load(&mut self, kind: StateKind) -> Result<Option<Vec<u8>>, TpmRc> {
        let result = self.load_unwrapped(kind);
        self.events.load_failed |= result.is_err();
        result
    }

    fn store(&mut self, kind: StateKind, data: &[u8]) -> Result<(), TpmRc> {
        let result = self.store_wrapped(kind, data);
        self.write_outcome(result)
    }

    fn delete(&mut self, kind: StateKind, must_exist: bool) -> Result<(), TpmRc> {
        let store = self.store.as_deref_mut().ok_or(TPM_FAIL)?;
        let result = if !self.writable {
            log_handed_over(&store.describe(kind));
            Err(TPM_FAIL)
        } else {
            match store.delete(kind) {
                Ok(false) if must_exist => return Err(TPM_FAIL),
                Ok(_) => Ok(()),
                Err(err) => {
                    log_error!("{}", error_chain(&err));
                    Err(TPM_FAIL)
                }
            }
        };
        self.write_outcome(result)
    }

    fn locality(&self) -> u8 {
        self.locality
    }
}

impl StateHost<'_> {
    /// Records a failed write. Inside a TPM command libtpms is told it worked: a TPM 2
    /// would otherwise enter failure mode and answer nothing but TPM_RC_FAILURE until
    /// the process restarts, and its failure flag is part of the volatile state, so it
    /// could not be restarted with its PCRs and sessions intact. The command's response
    /// is replaced by an error and libtpms restarted from the (unchanged) stored state.
    fn write_outcome(&mut self, result: Result<(), TpmRc>) -> Result<(), TpmRc> {
        if result.is_err() {
            self.events.write_failed = true;
            if self.in_command {
                return Ok(());
            }
        }
        result
    }

    fn load_unwrapped(&mut self, kind: StateKind) -> Result<Option<Vec<u8>>, TpmRc> {
        let store = self.store.as_deref_mut().ok_or(TPM_FAIL)?;
        let what = store.describe(kind);
        let Some(stored) = store.load(kind).map_err(|err| {
            log_error!("{}", error_chain(&err));
            TPM_FAIL
        })?
        else {
            return Ok(None);
        };
        match blob::unwrap_stored(&stored, self.state_key) {
            Ok(state) => {
                if !self.events.loaded.contains(&what) {
                    self.events.loaded.push(what);
                }
                Ok(Some(state))
            }
            Err(err) => {
                if !self.events.refused.contains(&what) {
                    log_error!(
                        "TPM state {what} cannot be used: {}; it was left unchanged: restore it from a backup, or move it away to start a new TPM",
                        error_chain(&err)
                    );
                    self.events.refused.push(what);
                }
                Err(err.result_code())
            }
        }
    }

    fn store_wrapped(&mut self, kind: StateKind, data: &[u8]) -> Result<(), TpmRc> {
        let store = self.store.as_deref_mut().ok_or(TPM_FAIL)?;
        if !self.writable {
            log_handed_over(&store.describe(kind));
            return Err(TPM_FAIL);
        }
        let wrapped =
            blob::wrap_stored(data, self.state_key, &mut KernelRandom).map_err(|err| {
                log_error!(
                    "TPM state {} was not written: {}",
                    store.describe(kind),
                    error_chain(&err)
                );
                err.result_code()
            })?;
        store.save(kind, &wrapped).map_err(|err| {
            log_error!("{}; the previous state was kept", error_chain(&err));
            TPM_FAIL
        })
    }
}

fn log_handed_over(what: &str) {
    log_error!(
        "TPM state {what} was not written: the storage lock was handed over to the migration destination (LOCK_STORAGE or the next TPM command takes it back)"
    );
}
