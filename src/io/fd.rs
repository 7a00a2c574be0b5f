//! Taking ownership of file descriptors that arrive from outside the program: numbers
//! given on the command line (inherited from the parent) and descriptors received with
//! SCM_RIGHTS. Rust cannot check either, so this is one of the few places with `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// Writes the file's dirty pages to the device and waits for that I/O, without a cache
/// flush and without metadata (`sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`): it
/// orders data before a later rename; the durability comes from the `fsync` after it.
pub fn write_out_data(file: &std::fs::File) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain system call on a descriptor `file` keeps open; offset 0 and length
    // 0 mean "the whole file"; nothing is read from or written to our memory.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `read(2)` as a bare system call, for the data channel's hot path. glibc's `read`,
/// `write`, `recv` and `send` are pthread cancellation points: each brackets the call
/// with `__pthread_enable_asynccancel`/`__pthread_disable_asynccancel`, about 60
/// instructions per call — a quarter of what vtpm added around libtpms per TPM command
/// (callgrind). Rust never cancels threads, so that bookkeeping buys nothing here.
pub fn read_bare(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow
    // mutably for the call; `fd` is open for the borrow's lifetime.
    let n = unsafe { libc::syscall(libc::SYS_read, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes all of `buf` with bare `write(2)` calls (see [`read_bare`]); one call unless
/// the kernel takes less.
pub fn write_all_bare(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`, borrowed for
        // the call; `fd` is open for the borrow's lifetime.
        let n = unsafe { libc::syscall(libc::SYS_write, fd.as_raw_fd(), buf.as_ptr(), buf.len()) };
        match n {
            n if n > 0 => buf = &buf[n as usize..],
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// A non-blocking `recv(2)` (`MSG_DONTWAIT`) as a bare system call (see [`read_bare`]):
/// `Ok(None)` when nothing is there yet. Sockets only.
pub fn recv_dontwait_bare(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow
    // mutably for the call; no address is asked for; `fd` is open for the borrow.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            libc::MSG_DONTWAIT,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(err),
    }
}
