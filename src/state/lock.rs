//! The storage lock both backends use (state-format.md §7): a POSIX write lock
//! (`fcntl(F_SETLK)`) on a whole file, which swtpm and vtpm instances on the same
//! storage see alike, also across NFS. One try, then `retries` more 10 ms apart.

use std::fs::File;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// Spacing of lock attempts when retries are asked for (LOCK_STORAGE, migration).
const RETRY_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it (after all retries).
    #[error("another process holds the lock")]
    Held,
    #[error("the lock could not be taken")]
    Failed(#[source] std::io::Error),
}

fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Takes the write lock on all of `file`.
pub fn lock(file: &File, retries: u32) -> Result<(), LockError> {
    let request = whole_file(libc::F_WRLCK);
    let mut attempts_left = retries;
    loop {
        match fcntl(file, FcntlArg::F_SETLK(&request)) {
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN | Errno::EACCES) if attempts_left > 0 => {
                attempts_left -= 1;
                std::thread::sleep(RETRY_INTERVAL);
            }
            Err(Errno::EAGAIN | Errno::EACCES) => return Err(LockError::Held),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(LockError::Failed(errno.into())),
        }
    }
}

/// Releases the lock on `file` while keeping it open (the linear backend's file).
pub fn unlock(file: &File) -> Result<(), LockError> {
    fcntl(file, FcntlArg::F_SETLK(&whole_file(libc::F_UNLCK)))
        .map(drop)
        .map_err(|errno| LockError::Failed(errno.into()))
}
