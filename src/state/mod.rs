//! Where the TPM's state lives between runs: swtpm's blob format and its backends.

pub mod blob;
pub mod crypto;
pub mod dir;
pub mod key;
pub mod tlv;

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not read TPM state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("could not write TPM state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("TPM state file {path} is not a regular file; move it away")]
    NotAFile { path: PathBuf },
    #[error(
        "could not open lock file {path}: {source}; check that the TPM state directory exists and is writable"
    )]
    LockFile { path: PathBuf, source: io::Error },
    #[error(
        "TPM state directory {dir} is in use by another process that holds its .lock; stop that process or choose another --tpmstate directory"
    )]
    Locked { dir: PathBuf },
}
