//! Where the TPM's state lives between runs: swtpm's blob format and its backends.
//!
//! [`Store`] is the one interface the emulator uses; each backend keeps swtpm's on-disk
//! layout so that swtpm and vtpm can take turns on the same state:
//! * [`dir::DirStore`] (`dir=`, `backend-uri=dir://`, `TPM_PATH`): one file per blob;
//! * [`file::LinearStore`] (`backend-uri=file://`): all blobs in one file or block
//!   device, in the container of [`linear`].

pub mod blob;
pub mod crypto;
pub mod dir;
pub mod durability;
pub mod file;
pub mod journal;
pub mod key;
pub mod linear;
pub mod lock;
pub mod tlv;

use std::io;
use std::path::PathBuf;

use crate::libtpms::StateKind;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not read TPM state {what}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("could not write TPM state {what}")]
    Write {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("TPM state file {path} is not a regular file; move it away")]
    NotAFile { path: PathBuf },
    #[error(
        "could not open lock file {path}; check that the TPM state directory exists and is writable"
    )]
    LockFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "TPM state {what} is in use by another process that holds its lock; stop that process or choose another --tpmstate"
    )]
    Locked { what: String },
    #[error("could not lock TPM state {what}")]
    LockFailed {
        what: String,
        #[source]
        source: lock::LockError,
    },
    #[error(
        "could not open the linear TPM state store {path}; check that it exists or that its directory is writable"
    )]
    OpenLinear {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a linear TPM state store and not empty; it was left unchanged: give the right file, or move it away (or zero it) to start a new TPM"
    )]
    NotAContainer { path: PathBuf },
    #[error(
        "the linear TPM state store {path} cannot be used and was left unchanged; restore it from a backup, or move it away to start a new TPM"
    )]
    Container {
        path: PathBuf,
        #[source]
        source: linear::LinearError,
    },
    #[error(
        "the TPM state backend '{uri}' is not supported; use dir://<directory> or file://<file>"
    )]
    UnsupportedBackend { uri: String },
}

/// The state storage of the daemon: one of the backends.
pub enum Store {
    Dir(dir::DirStore),
    Linear(file::LinearStore),
}

impl Store {
    /// Names where `kind` is stored, for messages: a file path, or a slot of the store.
    pub fn describe(&self, kind: StateKind) -> String {
        match self {
            Store::Dir(store) => store.path(kind).display().to_string(),
            Store::Linear(store) => store.describe(kind),
        }
    }

    /// The stored bytes of `kind`, or `None` if there are none.
    pub fn load(&mut self, kind: StateKind) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Dir(store) => store.load(kind),
            Store::Linear(store) => store.load(kind),
        }
    }

    /// Replaces the stored bytes of `kind`; durable when it returns.
    pub fn save(&mut self, kind: StateKind, data: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Dir(store) => store.save(kind, data),
            Store::Linear(store) => store.save(kind, data),
        }
    }

    /// Removes the stored bytes of `kind`; `Ok(false)` if there were none.
    pub fn delete(&mut self, kind: StateKind) -> Result<bool, StoreError> {
        match self {
            Store::Dir(store) => store.delete(kind),
            Store::Linear(store) => store.delete(kind),
        }
    }

    /// Size of the stored blob of `kind` (for `--print-states`), `None` if absent.
    pub fn stored_size(&mut self, kind: StateKind) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Dir(store) => store.stored_size(kind),
            Store::Linear(store) => store.stored_size(kind),
        }
    }

    /// Whether this storage is locked while in use (`--tpmstate ...,lock[=bool]`).
    pub fn lock_enabled(&self) -> bool {
        match self {
            Store::Dir(store) => store.lock_enabled(),
            Store::Linear(store) => store.lock_enabled(),
        }
    }

    pub fn is_locked(&self) -> bool {
        match self {
            Store::Dir(store) => store.is_locked(),
            Store::Linear(store) => store.is_locked(),
        }
    }

    /// Takes the lock (if locking is enabled): one try, then `retries` more 10 ms apart.
    /// Taking it again while held is a no-op.
    pub fn lock(&mut self, retries: u32) -> Result<(), StoreError> {
        if !self.lock_enabled() {
            return Ok(());
        }
        match self {
            Store::Dir(store) => store.lock(retries),
            Store::Linear(store) => store.lock(retries),
        }
    }

    pub fn unlock(&mut self) {
        match self {
            Store::Dir(store) => store.unlock(),
            Store::Linear(store) => store.unlock(),
        }
    }

    /// Makes everything stored so far durable, for a hand-over of shared storage to
    /// another host (every save already is; this also covers deletions and anything an
    /// earlier process left in the page cache).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        match self {
            Store::Dir(store) => store.sync(),
            Store::Linear(store) => store.sync(),
        }
    }
}
