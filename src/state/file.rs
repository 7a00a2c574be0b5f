//! The linear file backend (`--tpmstate backend-uri=file://PATH`): all blobs in one
//! regular file or block device, in swtpm's container (state-format.md §6; the layout
//! decisions are in [`super::linear`], this module only carries them out).
//!
//! The file is opened at first use and kept open for the life of the process (swtpm
//! does the same); with `lock` its fcntl lock is taken on this one descriptor. The
//! header is read afresh for every operation, so that a daemon that takes over the lock
//! from another one on shared storage sees that one's last writes.
//!
//! Durability: every change is written with `pwrite` and then the file is flushed with
//! one `fdatasync` before the call returns. swtpm maps the file and `msync`s page-rounded
//! ranges; `fdatasync` covers every range a change touched (moved sections, the blob,
//! the header, and a new file size) in one flush, without an `unsafe` mapping. Like
//! swtpm's, a change rewrites the container in place: unlike the directory backend it is
//! not atomic against a power failure in the middle of a write.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

use super::StoreError;
use super::linear::{self, HEADER_LEN, Header, Medium, Plan};
use super::lock::{self, LockError};
use crate::libtpms::StateKind;
use crate::log_error;

/// Mode of a new container file when `--tpmstate` gives none (the umask still applies).
const DEFAULT_MODE: u32 = 0o640;

pub struct LinearStore {
    path: PathBuf,
    explicit_mode: Option<u32>,
    /// `lock[=bool]` of `--tpmstate` (off unless turned on).
    lock_enabled: bool,
    open: Option<Container>,
    locked: bool,
}

/// The open container file.
struct Container {
    file: File,
    medium: Medium,
}

impl LinearStore {
    pub fn new(path: PathBuf, explicit_mode: Option<u32>, lock_enabled: bool) -> LinearStore {
        LinearStore {
            path,
            explicit_mode,
            lock_enabled,
            open: None,
            locked: false,
        }
    }

    fn uri(&self) -> String {
        format!("file://{}", self.path.display())
    }

    pub fn describe(&self, kind: StateKind) -> String {
        format!("{} ({})", self.uri(), kind.name())
    }

    /// The open container, opening (and if new, formatting) it at first use.
    fn container(&mut self) -> Result<&Container, StoreError> {
        if self.open.is_none() {
            self.open = Some(self.open_container()?);
        }
        Ok(self.open.as_ref().expect("opened above"))
    }

    fn open_container(&self) -> Result<Container, StoreError> {
        let open_error = |source| StoreError::OpenLinear {
            path: self.path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(self.explicit_mode.unwrap_or(DEFAULT_MODE))
            .open(&self.path)
            .map_err(open_error)?;
        let file_type = file.metadata().map_err(open_error)?.file_type();
        let medium = if file_type.is_block_device() {
            Medium::Device(file.seek(SeekFrom::End(0)).map_err(open_error)?)
        } else if file_type.is_file() {
            if let Some(mode) = self.explicit_mode {
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(open_error)?;
            }
            Medium::File
        } else {
            return Err(StoreError::NotAFile {
                path: self.path.clone(),
            });
        };
        let container = Container { file, medium };
        let len = self.len(&container)?;
        let mut bytes = vec![0u8; HEADER_LEN];
        let have = len.min(HEADER_LEN as u64) as usize;
        self.read_exact_at(&container, &mut bytes[..have], 0)?;
        match (Header::parse(&bytes, len.max(HEADER_LEN as u64)), medium) {
            (Ok(Some(_)), _) => Ok(container),
            (Err(source), _) => Err(self.container_error(source)),
            // A fresh block device holds whatever was there before: swtpm formats it.
            // A regular file is formatted only when it holds nothing yet, so that a
            // wrong path never destroys someone's data.
            (Ok(None), Medium::Device(size)) if size < HEADER_LEN as u64 => {
                Err(self.container_error(linear::LinearError::TooShort(size)))
            }
            (Ok(None), Medium::File) if bytes.iter().any(|b| *b != 0) => {
                Err(StoreError::NotAContainer {
                    path: self.path.clone(),
                })
            }
            (Ok(None), _) => {
                self.format(&container, len)?;
                Ok(container)
            }
        }
    }

    fn format(&self, container: &Container, len: u64) -> Result<(), StoreError> {
        if container.medium == Medium::File && len < HEADER_LEN as u64 {
            container
                .file
                .set_len(HEADER_LEN as u64)
                .map_err(|source| self.write_error(source))?;
        }
        self.write_all_at(container, &Header::default().encode(), 0)?;
        container
            .file
            .sync_data()
            .map_err(|source| self.write_error(source))?;
        log_error!("Formatting '{}' as new linear NVRAM store", self.uri());
        Ok(())
    }

    fn len(&self, container: &Container) -> Result<u64, StoreError> {
        match container.medium {
            Medium::Device(size) => Ok(size),
            Medium::File => container
                .file
                .metadata()
                .map(|meta| meta.len())
                .map_err(|source| self.read_error(source)),
        }
    }

    /// The current header and container length.
    fn header(&mut self) -> Result<(Header, u64), StoreError> {
        self.container()?;
        let container = self.open.as_ref().expect("opened by container()");
        let len = self.len(container)?;
        let mut bytes = [0u8; HEADER_LEN];
        self.read_exact_at(container, &mut bytes, 0)?;
        match Header::parse(&bytes, len) {
            Ok(Some(header)) => Ok((header, len)),
            Ok(None) => Err(StoreError::NotAContainer {
                path: self.path.clone(),
            }),
            Err(source) => Err(self.container_error(source)),
        }
    }

    /// The stored bytes of `kind`, or `None` if there are none.
    pub fn load(&mut self, kind: StateKind) -> Result<Option<Vec<u8>>, StoreError> {
        let (header, _) = self.header()?;
        let slot = header.slots[slot_of(kind)];
        if !slot.is_present() {
            return Ok(None);
        }
        let container = self.open.as_ref().expect("opened by header()");
        let mut data = vec![0u8; slot.data_len as usize];
        self.read_exact_at(container, &mut data, slot.data().start)?;
        Ok(Some(data))
    }

    /// Replaces the stored bytes of `kind`; durable when it returns.
    pub fn save(&mut self, kind: StateKind, data: &[u8]) -> Result<(), StoreError> {
        let (header, len) = self.header()?;
        let container = self.open.as_ref().expect("opened by header()");
        let plan = linear::plan_store(&header, slot_of(kind), data.len(), len, container.medium)
            .map_err(|source| self.container_error(source))?;
        self.carry_out(&plan, data)
    }

    /// Removes the stored bytes of `kind`; `Ok(false)` if there were none.
    pub fn delete(&mut self, kind: StateKind) -> Result<bool, StoreError> {
        let (header, len) = self.header()?;
        let container = self.open.as_ref().expect("opened by header()");
        match linear::plan_delete(&header, slot_of(kind), len, container.medium) {
            Some(plan) => self.carry_out(&plan, &[]).map(|()| true),
            None => Ok(false),
        }
    }

    /// Moves, writes the blob and the header, resizes, then flushes everything at once.
    fn carry_out(&self, plan: &Plan, data: &[u8]) -> Result<(), StoreError> {
        let container = self.open.as_ref().expect("a plan needs the open container");
        let file = &container.file;
        let write_error = |source| self.write_error(source);
        if let Some(new_len) = plan.new_len {
            self.reserve(container, new_len)?;
        }
        if let Some(moved) = &plan.moved {
            let mut sections = vec![0u8; (moved.from.end - moved.from.start) as usize];
            self.read_exact_at(container, &mut sections, moved.from.start)?;
            self.write_all_at(container, &sections, moved.to)?;
        }
        if let Some(at) = plan.data_at {
            self.write_all_at(container, data, at)?;
        }
        self.write_all_at(container, &plan.header.encode(), 0)?;
        if let Some(len) = plan.new_len {
            file.set_len(len).map_err(write_error)?;
        }
        file.sync_data().map_err(write_error)
    }

    /// Allocates the blocks of a growing container before anything is moved or written,
    /// so that a full filesystem fails the change while the container is still intact
    /// (a sparse extension would fail half-way through the writes instead).
    fn reserve(&self, container: &Container, new_len: u64) -> Result<(), StoreError> {
        let len = self.len(container)?;
        if new_len <= len {
            return Ok(());
        }
        let grow = |len: u64| i64::try_from(len).map_err(|_| Errno::EFBIG);
        let reserved = grow(len).and_then(|start| {
            fallocate(
                &container.file,
                FallocateFlags::empty(),
                start,
                grow(new_len - len)?,
            )
        });
        match reserved {
            // Filesystems without fallocate get a plain (possibly sparse) extension.
            Ok(()) | Err(Errno::EOPNOTSUPP) => Ok(()),
            Err(errno) => Err(self.write_error(errno.into())),
        }
    }

    /// Size of the stored blob of `kind` (its data length), `None` if absent.
    pub fn stored_size(&mut self, kind: StateKind) -> Result<Option<u64>, StoreError> {
        let (header, _) = self.header()?;
        let slot = header.slots[slot_of(kind)];
        Ok(slot.is_present().then_some(u64::from(slot.data_len)))
    }

    pub fn sync(&mut self) -> Result<(), StoreError> {
        let container = self.container()?;
        container
            .file
            .sync_all()
            .map_err(|source| self.write_error(source))
    }

    pub fn lock_enabled(&self) -> bool {
        self.lock_enabled
    }

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Takes the fcntl write lock on the container file itself.
    pub fn lock(&mut self, retries: u32) -> Result<(), StoreError> {
        if self.locked {
            return Ok(());
        }
        let container = self.container()?;
        match lock::lock(&container.file, retries) {
            Ok(()) => {
                self.locked = true;
                Ok(())
            }
            Err(LockError::Held) => Err(StoreError::Locked { what: self.uri() }),
            Err(source) => Err(StoreError::LockFailed {
                what: self.uri(),
                source,
            }),
        }
    }

    pub fn unlock(&mut self) {
        if let Some(container) = &self.open {
            if let Err(err) = lock::unlock(&container.file) {
                log_error!("could not unlock {}: {err}", self.uri());
            }
        }
        self.locked = false;
    }

    fn read_exact_at(
        &self,
        container: &Container,
        buf: &mut [u8],
        at: u64,
    ) -> Result<(), StoreError> {
        container
            .file
            .read_exact_at(buf, at)
            .map_err(|source| self.read_error(source))
    }

    fn write_all_at(&self, container: &Container, buf: &[u8], at: u64) -> Result<(), StoreError> {
        container
            .file
            .write_all_at(buf, at)
            .map_err(|source| self.write_error(source))
    }

    fn read_error(&self, source: io::Error) -> StoreError {
        StoreError::Read {
            what: self.uri(),
            source,
        }
    }

    fn write_error(&self, source: io::Error) -> StoreError {
        StoreError::Write {
            what: self.uri(),
            source,
        }
    }

    fn container_error(&self, source: linear::LinearError) -> StoreError {
        StoreError::Container {
            path: self.path.clone(),
            source,
        }
    }
}

/// The container slot of each blob (swtpm's numbering).
fn slot_of(kind: StateKind) -> usize {
    match kind {
        StateKind::Permanent => 0,
        StateKind::Volatile => 1,
        StateKind::SaveState => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_formatted_and_keeps_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let mut store = LinearStore::new(path.clone(), None, false);
        assert_eq!(store.load(StateKind::Permanent).unwrap(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 192);
        store.save(StateKind::Permanent, &[7; 1370]).unwrap();
        store.save(StateKind::Volatile, &[8; 8986]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 18624);
        assert_eq!(store.stored_size(StateKind::Volatile).unwrap(), Some(8986));
        assert!(store.delete(StateKind::Volatile).unwrap());
        assert!(!store.delete(StateKind::Volatile).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2240);
        let mut reopened = LinearStore::new(path, None, false);
        assert_eq!(
            reopened.load(StateKind::Permanent).unwrap().unwrap(),
            vec![7; 1370]
        );
    }

    #[test]
    fn a_foreign_file_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notes.txt");
        std::fs::write(&path, b"important").unwrap();
        let mut store = LinearStore::new(path.clone(), None, false);
        assert!(matches!(
            store.load(StateKind::Permanent),
            Err(StoreError::NotAContainer { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"important");
    }

    #[test]
    fn lock_is_taken_on_the_file_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = LinearStore::new(tmp.path().join("state"), None, true);
        store.lock(0).unwrap();
        store.lock(0).unwrap();
        assert!(store.is_locked());
        store.unlock();
        assert!(!store.is_locked());
    }
}
