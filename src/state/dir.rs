//! The directory backend (`--tpmstate dir=`): one file per blob with swtpm's names
//! (state-format.md §2), and the `.lock` file that keeps two daemons apart.
//!
//! A write is atomic and durable before it returns, at the cost of one cache flush:
//! see [`DirStore::save`] for why the hot path looks the way it does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::statfs::fstatfs;

use super::StoreError;
use super::durability::{self, RenameDurability};
use super::lock::{self, LockError};
use crate::io::fd::write_out_data;
use crate::libtpms::StateKind;
use crate::tpm::TpmVersion;

/// Mode of new state files when `--tpmstate` gives none (the umask still applies).
const DEFAULT_MODE: u32 = 0o640;
const LOCK_FILE: &str = ".lock";

pub struct DirStore {
    dir: PathBuf,
    version: TpmVersion,
    /// `mode=` of `--tpmstate`, when given: files get exactly these bits.
    explicit_mode: Option<u32>,
    /// `lock[=bool]` of `--tpmstate` (on unless turned off).
    lock_enabled: bool,
    /// Open while we hold the lock: closing it releases the fcntl lock.
    lock: Option<File>,
    /// What a rename needs on this filesystem (learned at the first write).
    durability: Option<RenameDurability>,
}

impl DirStore {
    pub fn new(
        dir: PathBuf,
        version: TpmVersion,
        explicit_mode: Option<u32>,
        lock_enabled: bool,
    ) -> DirStore {
        DirStore {
            dir,
            version,
            explicit_mode,
            lock_enabled,
            lock: None,
            durability: None,
        }
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
    pub fn load(&mut self, kind: StateKind) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(kind);
        let read_error = |source| StoreError::Read {
            what: path.display().to_string(),
            source,
        };
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(read_error(source)),
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(read_error)?;
        self.fix_mode(&file, &path)?;
        Ok(Some(data))
    }

    /// An explicit mode is applied to files we load; with the default mode, a file we
    /// could not rewrite gets owner-write back (swtpm 0.10 does the same).
    fn fix_mode(&self, file: &File, path: &Path) -> Result<(), StoreError> {
        let meta = file.metadata().map_err(|source| StoreError::Read {
            what: path.display().to_string(),
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
                    what: path.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Replaces the stored bytes of `kind`, atomically and durably, with one flush.
    ///
    /// The blob goes to a temporary file, which is renamed over the old one; readers
    /// see the old file or the new one, never a mix. The hot path is
    /// `open, write, rename, fsync, close` (5 system calls; it was 8 with two flushes:
    /// `fdatasync` of the temporary file and `fsync` of the directory):
    /// * one `fsync` of the renamed file — not `fdatasync`, which may skip the commit
    ///   for the rename's ctime-only change — makes data, inode and name durable on
    ///   ext4, XFS, btrfs (the rename rides in the same journal commit);
    /// * where the filesystem does not order the data before the rename by itself
    ///   (XFS, btrfs, ext4 mounted `data=writeback`), `sync_file_range` writes the data
    ///   out first, without a flush; on other filesystems the directory is fsynced too.
    ///
    /// The reasoning per filesystem is in [`super::durability`]. A temporary file left
    /// by a crash is harmless: the next write truncates it.
    pub fn save(&mut self, kind: StateKind, data: &[u8]) -> Result<(), StoreError> {
        let temp = self.temp_path(kind);
        let path = self.path(kind);
        let result = self.replace(&temp, &path, data);
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn replace(&mut self, temp: &Path, path: &Path, data: &[u8]) -> Result<(), StoreError> {
        let write_error = |source| StoreError::Write {
            what: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.explicit_mode.unwrap_or(DEFAULT_MODE))
            .custom_flags(libc::O_NOFOLLOW)
            .open(temp)
            .map_err(write_error)?;
        if let Some(mode) = self.explicit_mode {
            // The umask applied at creation; an explicit mode means exactly these bits.
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(write_error)?;
        }
        file.write_all(data).map_err(write_error)?;
        let durability = self.durability(&file);
        if durability.write_out_before_rename {
            write_out_data(&file).map_err(write_error)?;
        }
        fs::rename(temp, path).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        if durability.sync_dir_after_rename {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// What a rename needs on the filesystem of `file` (asked once); when in doubt,
    /// everything.
    fn durability(&mut self, file: &File) -> RenameDurability {
        *self.durability.get_or_insert_with(|| match fstatfs(file) {
            Ok(fs) => durability::for_filesystem(fs.filesystem_type(), || {
                let (Ok(mountinfo), Ok(meta)) =
                    (fs::read_to_string("/proc/self/mountinfo"), file.metadata())
                else {
                    return false;
                };
                let dev = meta.dev();
                durability::ext4_orders_renamed_data(
                    &mountinfo,
                    libc::major(dev).into(),
                    libc::minor(dev).into(),
                )
            }),
            Err(_) => durability::UNKNOWN,
        })
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        let wrap = |source| StoreError::Write {
            what: self.dir.display().to_string(),
            source,
        };
        File::open(&self.dir)
            .map_err(wrap)?
            .sync_all()
            .map_err(wrap)
    }

    /// Removes the stored bytes of `kind`; `Ok(false)` if there were none. The removal
    /// is durable: a volatile state that came back after a crash would be resumed.
    pub fn delete(&mut self, kind: StateKind) -> Result<bool, StoreError> {
        let path = self.path(kind);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir().map(|()| true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Write {
                what: path.display().to_string(),
                source,
            }),
        }
    }

    /// Size of the stored blob of `kind` (for `--print-states`), `None` if absent.
    pub fn stored_size(&mut self, kind: StateKind) -> Result<Option<u64>, StoreError> {
        let path = self.path(kind);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Err(StoreError::NotAFile { path }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read {
                what: path.display().to_string(),
                source,
            }),
        }
    }

    /// Flushes the permanent state file and the directory (see [`super::Store::sync`]).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let path = self.path(StateKind::Permanent);
        match File::open(&path) {
            Ok(file) => file.sync_all().map_err(|source| StoreError::Write {
                what: path.display().to_string(),
                source,
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Read {
                    what: path.display().to_string(),
                    source,
                });
            }
        }
        self.sync_dir()
    }

    pub fn lock_enabled(&self) -> bool {
        self.lock_enabled
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// Takes the `.lock` file's write lock: one try, then `retries` more 10 ms apart.
    /// Taking it again while held is a no-op. The file stays open exactly while the
    /// lock is held (swtpm's tests look for it in `/proc/<pid>/fd`).
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
        match lock::lock(&file, retries) {
            Ok(()) => {
                self.lock = Some(file);
                Ok(())
            }
            Err(LockError::Held) => Err(StoreError::Locked {
                what: format!("directory {}", self.dir.display()),
            }),
            Err(source) => Err(StoreError::LockFailed {
                what: path.display().to_string(),
                source,
            }),
        }
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
        DirStore::new(dir.to_owned(), TpmVersion::V2, None, true)
    }

    #[test]
    fn save_load_delete_use_swtpm_names() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = store(tmp.path());
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
    fn the_cautious_write_path_gives_the_same_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = store(tmp.path());
        store.durability = Some(durability::UNKNOWN);
        store.save(StateKind::Permanent, b"old").unwrap();
        store.save(StateKind::Permanent, b"new").unwrap();
        assert_eq!(store.load(StateKind::Permanent).unwrap().unwrap(), b"new");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn explicit_mode_is_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = DirStore::new(tmp.path().to_owned(), TpmVersion::V1_2, Some(0o606), true);
        store.save(StateKind::Volatile, b"x").unwrap();
        let meta = fs::metadata(tmp.path().join("tpm-00.volatilestate")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o606);
    }

    #[test]
    fn failed_write_leaves_old_state() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = store(tmp.path());
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
