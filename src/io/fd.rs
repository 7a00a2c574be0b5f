//! Taking ownership of file descriptors that arrive from outside the program: numbers
//! given on the command line (inherited from the parent) and descriptors received with
//! SCM_RIGHTS. Rust cannot check either, so this is one of the few places with `unsafe`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Takes an inherited descriptor given by number (e.g. `--fd 5`), after checking that it
/// is open. The caller must take each number at most once.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; an unused number fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and was handed to this process for this purpose;
    // the command line gives each number to one option, so nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not leaked into processes we might start (none today, but cheap to be right).
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(owned)
}

/// Owns a descriptor the kernel just installed in this process for a received
/// SCM_RIGHTS message.
pub fn own_received(fd: RawFd) -> OwnedFd {
    // SAFETY: recvmsg created this descriptor for us; nobody else has seen its number.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The file type bits (`S_IFMT`) of a descriptor given by number, which may not be
/// open (`-f/--fd` is checked while the command line is parsed).
pub fn file_type_of(fd: RawFd) -> io::Result<libc::mode_t> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes a `struct stat` into the buffer we own; a number that is
    // not an open descriptor fails with EBADF. (nix's fstat wants a BorrowedFd, which
    // promises an open descriptor: this one is untrusted input.)
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled in the whole struct.
    Ok(unsafe { stat.assume_init() }.st_mode & libc::S_IFMT)
}
