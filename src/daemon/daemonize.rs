//! `-d/--daemon`: the classic double fork. The command that was started waits until the
//! daemon is ready (or died) and exits accordingly, so that a caller knows the sockets
//! exist when it returns.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe, setsid};

/// Held by the daemon until it serves; dropping it without [`Readiness::ready`] tells
/// the waiting parent that start-up failed.
pub struct Readiness {
    pipe: File,
}

#[derive(Debug, thiserror::Error)]
#[error("could not daemonize")]
pub struct DaemonizeError(#[source] nix::Error);

/// Forks into the background. Returns in the daemon only; the original process exits.
/// Must run before any thread is started.
pub fn daemonize() -> Result<Readiness, DaemonizeError> {
    let (read_end, write_end) = pipe().map_err(DaemonizeError)?;
    // SAFETY: called at start-up, before the daemon starts any thread, so the child is a
    // complete copy of a single-threaded process.
    match unsafe { fork() }.map_err(DaemonizeError)? {
        ForkResult::Parent { child } => {
            drop(write_end);
            let _ = waitpid(child, None);
            std::process::exit(wait_until_ready(read_end));
        }
        ForkResult::Child => {}
    }
    drop(read_end);
    setsid().map_err(DaemonizeError)?;
    // SAFETY: as above; still single-threaded.
    match unsafe { fork() }.map_err(DaemonizeError)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => Ok(Readiness {
            pipe: File::from(write_end),
        }),
    }
}

/// The original process's exit status: 0 once the daemon says it is ready, 1 if the
/// daemon went away first (its error is already on stderr).
fn wait_until_ready(read_end: OwnedFd) -> i32 {
    let mut byte = [0u8; 1];
    match File::from(read_end).read(&mut byte) {
        Ok(1) => 0,
        _ => 1,
    }
}

impl Readiness {
    /// The daemon serves now: detach from the terminal and release the waiting parent.
    pub fn ready(mut self) {
        if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
            let _ = dup2_stdin(&null);
            let _ = dup2_stdout(&null);
            let _ = dup2_stderr(&null);
        }
        let _ = self.pipe.write_all(b"R");
    }
}
