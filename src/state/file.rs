//! The linear file backend (`--tpmstate backend-uri=file://PATH`): all blobs in one
//! regular file or block device, in swtpm's container (state-format.md §6; the layout
//! decisions are in [`super::linear`], this module only carries them out).
//!
//! The file is opened at first use and kept open for the life of the process (swtpm
//! does the same); with `lock` its fcntl lock is taken on this one descriptor. The
//! header is read afresh for every operation, so that a daemon that takes over the lock
//! from another one on shared storage sees that one's last writes.
//!
//! Durability: every change is durable before the call returns, and atomic: it goes to
//! a redo record first ([`super::journal`]), then in place. Writes are `pwrite`s and
//! each flush is one `fdatasync`, which covers every range a change touched (moved
//! sections, the blob, the header, a new file size) at once: swtpm maps the file and
//! `msync`s page-rounded ranges (missing parts of ranges that cross a page boundary);
//! this needs no `unsafe` mapping either.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

use super::StoreError;
use super::journal;
use super::linear::{self, HEADER_LEN, Header, Medium, Plan};
use super::lock::{self, LockError};
use crate::libtpms::StateKind;
use crate::log_error;

/// The end of a redo record: where it is found from the container's end.
const TRAILER_LEN: usize = journal::TRAILER_LEN;
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
        self.finish_interrupted_change(&container)?;
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
        self.carry_out(&plan, data, header.sections_end())
    }

    /// Removes the stored bytes of `kind`; `Ok(false)` if there were none.
    pub fn delete(&mut self, kind: StateKind) -> Result<bool, StoreError> {
        let (header, len) = self.header()?;
        let container = self.open.as_ref().expect("opened by header()");
        match linear::plan_delete(&header, slot_of(kind), len, container.medium) {
            Some(plan) => self
                .carry_out(&plan, &[], header.sections_end())
                .map(|()| true),
            None => Ok(false),
        }
    }

    /// Carries out a plan atomically (see [`super::journal`]): the bytes it writes are
    /// recorded after the container's end and flushed, then written in place and
    /// flushed, then the record is cut off. Two flushes: an in-place format cannot be
    /// crash-safe with fewer. `old_end` is where the sections end before the change.
    fn carry_out(&self, plan: &Plan, data: &[u8], old_end: u64) -> Result<(), StoreError> {
        let container = self.open.as_ref().expect("a plan needs the open container");
        let len = self.len(container)?;
        let mut writes = Vec::with_capacity(3);
        if let Some(moved) = &plan.moved {
            let mut sections = vec![0u8; (moved.from.end - moved.from.start) as usize];
            self.read_exact_at(container, &mut sections, moved.from.start)?;
            writes.push(journal::Write {
                at: moved.to,
                bytes: sections,
            });
        }
        if let Some(at) = plan.data_at {
            writes.push(journal::Write {
                at,
                bytes: data.to_vec(),
            });
        }
        writes.push(journal::Write {
            at: 0,
            bytes: plan.header.encode().to_vec(),
        });
        let change = journal::Change {
            writes,
            final_len: plan.new_len.unwrap_or(len),
        };
        let record = change.encode();
        let record_len = record.len() as u64;
        let record_at = match container.medium {
            Medium::File => len.max(change.final_len).max(change.end()),
            // At the device's end, if that lies after the old and the new sections.
            Medium::Device(size) => size
                .checked_sub(record_len)
                .filter(|at| *at >= old_end.max(change.end()))
                .ok_or_else(|| {
                    self.container_error(linear::LinearError::NoRoom {
                        needed: old_end.max(change.end()) + record_len,
                        available: size,
                    })
                })?,
        };
        if container.medium == Medium::File {
            // A full filesystem fails here, before anything in the container changed.
            self.reserve(container, record_at + record_len)?;
        }
        self.write_all_at(container, &record, record_at)?;
        self.flush(container)?;
        self.apply(container, &change)?;
        self.flush(container)?;
        self.retire_record(container, &change)
    }

    /// Writes a recorded change in place.
    fn apply(&self, container: &Container, change: &journal::Change) -> Result<(), StoreError> {
        for write in &change.writes {
            self.write_all_at(container, &write.bytes, write.at)?;
        }
        Ok(())
    }

    /// Cuts the record off once its change is durable in place. Not flushed: a record
    /// that comes back after a crash is the last change's, and writing it again changes
    /// nothing; the next change writes its own record over it before anything else.
    fn retire_record(
        &self,
        container: &Container,
        change: &journal::Change,
    ) -> Result<(), StoreError> {
        match container.medium {
            Medium::File => container
                .file
                .set_len(change.final_len)
                .map_err(|source| self.write_error(source)),
            Medium::Device(size) => {
                let zeros = [0u8; TRAILER_LEN];
                self.write_all_at(container, &zeros, size - TRAILER_LEN as u64)
            }
        }
    }

    /// Completes a change that a crash interrupted after its record was flushed.
    fn finish_interrupted_change(&self, container: &Container) -> Result<(), StoreError> {
        let len = self.len(container)?;
        let mut trailer = [0u8; TRAILER_LEN];
        let Some(trailer_at) = len.checked_sub(TRAILER_LEN as u64) else {
            return Ok(());
        };
        self.read_exact_at(container, &mut trailer, trailer_at)?;
        let Some(record_len) = journal::record_len(&trailer).filter(|n| *n <= len) else {
            return Ok(());
        };
        let record_at = len - record_len;
        let mut record = vec![0u8; record_len as usize];
        self.read_exact_at(container, &mut record, record_at)?;
        let Some(change) = journal::decode(&record, record_at) else {
            return Ok(());
        };
        self.apply(container, &change)?;
        self.flush(container)?;
        self.retire_record(container, &change)?;
        self.flush(container)?;
        log_error!(
            "{}: completed a change that was interrupted (the process or machine stopped while it was written)",
            self.uri()
        );
        Ok(())
    }

    fn flush(&self, container: &Container) -> Result<(), StoreError> {
        container
            .file
            .sync_data()
            .map_err(|source| self.write_error(source))
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

    /// A crash after the record was flushed, in the middle of moving sections: the
    /// next open finishes the change.
    #[test]
    fn an_interrupted_change_is_finished_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let mut store = LinearStore::new(path.clone(), None, false);
        store.save(StateKind::Permanent, &[1; 100]).unwrap();
        store.save(StateKind::Volatile, &[2; 100]).unwrap();
        let (header, len) = store.header().unwrap();
        let plan = linear::plan_store(&header, 0, 300, len, Medium::File).unwrap();
        let moved = plan.moved.clone().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let from = moved.from.start as usize..moved.from.end as usize;
        let change = journal::Change {
            writes: vec![
                journal::Write {
                    at: moved.to,
                    bytes: bytes[from].to_vec(),
                },
                journal::Write {
                    at: plan.data_at.unwrap(),
                    bytes: vec![3; 300],
                },
                journal::Write {
                    at: 0,
                    bytes: plan.header.encode().to_vec(),
                },
            ],
            final_len: plan.new_len.unwrap(),
        };
        // Half of the move made it to disk, then the machine stopped.
        let to = moved.to as usize;
        bytes[to..to + 50].fill(0xee);
        let record_at = (len.max(change.final_len).max(change.end())) as usize;
        bytes.resize(record_at, 0);
        bytes.extend_from_slice(&change.encode());
        std::fs::write(&path, &bytes).unwrap();

        let mut reopened = LinearStore::new(path.clone(), None, false);
        assert_eq!(
            reopened.load(StateKind::Permanent).unwrap().unwrap(),
            vec![3; 300]
        );
        assert_eq!(
            reopened.load(StateKind::Volatile).unwrap().unwrap(),
            vec![2; 100]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), change.final_len);
    }

    #[test]
    fn a_record_that_was_not_flushed_completely_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        let mut store = LinearStore::new(path.clone(), None, false);
        store.save(StateKind::Permanent, &[1; 100]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let before = bytes.len();
        let mut record = journal::Change {
            writes: vec![journal::Write {
                at: 192,
                bytes: vec![9; 100],
            }],
            final_len: before as u64,
        }
        .encode();
        record[20] ^= 0xff;
        bytes.extend_from_slice(&record);
        std::fs::write(&path, &bytes).unwrap();
        let mut reopened = LinearStore::new(path, None, false);
        assert_eq!(
            reopened.load(StateKind::Permanent).unwrap().unwrap(),
            vec![1; 100]
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
