//! The directory backend (`--tpmstate dir=`): one file per blob with swtpm's names
//! (state-format.md §2), and the `.lock` file that keeps two daemons apart.
//!
//! A write is atomic and durable before it returns: the blob goes to a temporary file,
//! which is flushed, renamed over the old one, and then the directory is flushed, so
//! that neither a crash nor a power loss can leave a half-written or lost file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{FcntlArg, fcntl};

use crate::libtpms::StateKind;
use crate::tpm::TpmVersion;

use super::StoreError;

/// Mode of new state files when `--tpmstate` gives none (the umask still applies).
const DEFAULT_MODE: u32 = 0o640;
const LOCK_FILE: &str = ".lock";
/// Spacing of lock attempts when retries are asked for (LOCK_STORAGE, migration).
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(10);

pub struct DirStore {
    dir: PathBuf,
    version: TpmVersion,
    /// `mode=` of `--tpmstate`, when given: files get exactly these bits.
    explicit_mode: Option<u32>,
    /// Open while we hold the lock: closing it releases the fcntl lock.
    lock: Option<File>,
}

impl DirStore {
    pub fn new(dir: PathBuf, version: TpmVersion, explicit_mode: Option<u32>) -> DirStore {
        DirStore {
            dir,
            version,
            explicit_mode,
            lock: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, kind: StateKind) -> PathBuf {
        self.dir
            .join(format!("{}{}", self.version.file_prefix(), kind.name()))
    }

    fn temp_path(&self, kind: StateKind) -> PathBuf {
        let prefix = match self.version {
            TpmVersion::V1_2 => "TMP-00.",
            TpmVersion::V2 => "TMP2-00.",
        };
        self.dir.join(format!("{prefix}{}", kind.name()))
    }

    /// The stored bytes of `kind`, or `None` if there are none.
    pub fn load(&self, kind: StateKind) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(kind);
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
        self.fix_mode(&file, &path)?;
        Ok(Some(data))
    }

    /// An explicit mode is applied to files we load; with the default mode, a file we
    /// could not rewrite gets owner-write back (swtpm 0.10 does the same).
    fn fix_mode(&self, file: &File, path: &Path) -> Result<(), StoreError> {
        let meta = file.metadata().map_err(|source| StoreError::Read {
            path: path.to_owned(),
            source,
        })?;
        let current = meta.mode() & 0o7777;
        let wanted = match self.explicit_mode {
            Some(mode) => mode,
            None if current & 0o200 == 0 => current | 0o200,
            None => return Ok(()),
        };
        if current != wanted {
            file.set_permissions(fs::Permissions::from_mode(wanted))
                .map_err(|source| StoreError::Write {
                    path: path.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Replaces the stored bytes of `kind`, atomically and durably.
    pub fn save(&self, kind: StateKind, data: &[u8]) -> Result<(), StoreError> {
        let temp = self.temp_path(kind);
        let result = self.write_temp(&temp, data).and_then(|()| {
            let path = self.path(kind);
            fs::rename(&temp, &path).map_err(|source| StoreError::Write { path, source })?;
            self.sync_dir()
        });
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn write_temp(&self, temp: &Path, data: &[u8]) -> Result<(), StoreError> {
        let wrap = |source| StoreError::Write {
            path: temp.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.explicit_mode.unwrap_or(DEFAULT_MODE))
            .custom_flags(libc::O_NOFOLLOW)
            .open(temp)
            .map_err(wrap)?;
        if let Some(mode) = self.explicit_mode {
            // The umask applied at creation; an explicit mode means exactly these bits.
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(wrap)?;
        }
        file.write_all(data).map_err(wrap)?;
        file.sync_data().map_err(wrap)
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        let wrap = |source| StoreError::Write {
            path: self.dir.clone(),
            source,
        };
        File::open(&self.dir)
            .map_err(wrap)?
            .sync_all()
            .map_err(wrap)
    }

    /// Removes the stored bytes of `kind`; `Ok(false)` if there were none.
    pub fn delete(&self, kind: StateKind) -> Result<bool, StoreError> {
        let path = self.path(kind);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir().map(|()| true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Write { path, source }),
        }
    }

    /// Size of the stored blob of `kind` (for `--print-states`), `None` if absent.
    pub fn stored_size(&self, kind: StateKind) -> Result<Option<u64>, StoreError> {
        let path = self.path(kind);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Err(StoreError::NotAFile { path }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// Takes the `.lock` file's write lock: one try, then `retries` more 10 ms apart.
    /// Taking it again while held is a no-op.
    pub fn lock(&mut self, retries: u32) -> Result<(), StoreError> {
        if self.lock.is_some() {
            return Ok(());
        }
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o660)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| StoreError::LockFile {
                path: path.clone(),
                source,
            })?;
        let whole_file = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        let mut attempts_left = retries;
        loop {
            match fcntl(&file, FcntlArg::F_SETLK(&whole_file)) {
                Ok(_) => break,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) if attempts_left > 0 => {
                    attempts_left -= 1;
                    std::thread::sleep(LOCK_RETRY_INTERVAL);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                    return Err(StoreError::Locked {
                        dir: self.dir.clone(),
                    });
                }
                Err(errno) => {
                    return Err(StoreError::LockFile {
                        path,
                        source: errno.into(),
                    });
                }
            }
        }
        self.lock = Some(file);
        Ok(())
    }

    /// Releases the lock (closing the lock file's only descriptor).
    pub fn unlock(&mut self) {
        self.lock = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> DirStore {
        DirStore::new(dir.to_owned(), TpmVersion::V2, None)
    }

    #[test]
    fn save_load_delete_use_swtpm_names() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        assert_eq!(store.load(StateKind::Permanent).unwrap(), None);
        store.save(StateKind::Permanent, b"abc").unwrap();
        assert_eq!(
            fs::read(tmp.path().join("tpm2-00.permall")).unwrap(),
            b"abc"
        );
        assert_eq!(store.load(StateKind::Permanent).unwrap().unwrap(), b"abc");
        assert_eq!(store.stored_size(StateKind::Permanent).unwrap(), Some(3));
        assert!(store.delete(StateKind::Permanent).unwrap());
        assert!(!store.delete(StateKind::Permanent).unwrap());
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert!(names.is_empty(), "no temporary file is left behind");
    }

    #[test]
    fn explicit_mode_is_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::new(tmp.path().to_owned(), TpmVersion::V1_2, Some(0o606));
        store.save(StateKind::Volatile, b"x").unwrap();
        let meta = fs::metadata(tmp.path().join("tpm-00.volatilestate")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o606);
    }

    #[test]
    fn failed_write_leaves_old_state() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        store.save(StateKind::Permanent, b"old").unwrap();
        // A directory where the temporary file should go makes the write fail.
        fs::create_dir(tmp.path().join("TMP2-00.permall")).unwrap();
        assert!(store.save(StateKind::Permanent, b"new").is_err());
        assert_eq!(store.load(StateKind::Permanent).unwrap().unwrap(), b"old");
    }

    #[test]
    fn non_file_state_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("tpm2-00.permall")).unwrap();
        assert!(matches!(
            store(tmp.path()).stored_size(StateKind::Permanent),
            Err(StoreError::NotAFile { .. })
        ));
    }

    #[test]
    fn lock_is_reentrant_and_creates_lock_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = store(tmp.path());
        store.lock(0).unwrap();
        store.lock(0).unwrap();
        assert!(store.is_locked());
        assert!(tmp.path().join(".lock").exists());
        store.unlock();
        assert!(!store.is_locked());
    }

    #[test]
    fn missing_directory_fails_at_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = store(&tmp.path().join("missing"));
        assert!(matches!(store.lock(0), Err(StoreError::LockFile { .. })));
    }
}
