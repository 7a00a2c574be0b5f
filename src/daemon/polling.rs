//! Adaptive polling of the data channel after a response, as KVM's halt-polling does for
//! a halted vCPU.
//!
//! A guest sends TPM commands back to back (firmware measuring the boot, the OS's
//! driver, attestation): its next command arrives a few tens of µs after our response,
//! the time its vCPU needs to wake up, read the response and write again. A daemon
//! that blocks in `read` meanwhile must itself be woken up across CPUs when the
//! command comes — on a VM host that is an inter-processor interrupt and a vCPU leaving
//! its halt, ~20 µs per command here. Trying non-blocking reads for a short while
//! instead catches the command at once.
//!
//! The window adapts to the traffic: it grows when a command arrived soon after the
//! window closed (a larger window would have caught it), stays while polling catches
//! commands, and shrinks when the next command took longer than the largest window
//! (the guest is busy elsewhere, or idle: an idle daemon polls at most one window
//! after its last response, then blocks and uses no CPU). Between tries the CPU is
//! offered to other runnable tasks (`sched_yield`): a client on the same CPU gets it
//! at once, as KVM stops polling when another task wants the CPU.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::io::fd::recv_dontwait_bare;

/// The largest window (KVM's default `halt_poll_ns` is 200 µs; a TPM command costs
/// 5–30 µs here, so more would spend more CPU waiting than working).
pub const MAX_WINDOW: Duration = Duration::from_micros(50);
/// The first window once commands come close together.
const FIRST_WINDOW: Duration = Duration::from_micros(10);

/// The polling window of one data connection.
#[derive(Debug, Default)]
pub struct Poller {
    window: Duration,
}

/// What polling found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// This many bytes were read.
    Read(usize),
    /// Nothing came within the window that opened at this instant: block now, and tell
    /// [`Poller::missed`] when the command came.
    Nothing(Instant),
}

impl Poller {
    /// Called right after a response went out: tries non-blocking reads into `buf`
    /// until the window closes. Never inlined (nor is [`Poller::missed`]), so that a
    /// profile shows what polling costs: the benchmark reports it apart.
    #[inline(never)]
    pub fn poll(&mut self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Polled> {
        let opened = Instant::now();
        if self.window.is_zero() {
            return Ok(Polled::Nothing(opened));
        }
        loop {
            if let Some(n) = recv_dontwait_bare(fd, buf)? {
                return Ok(Polled::Read(n));
            }
            if opened.elapsed() >= self.window {
                return Ok(Polled::Nothing(opened));
            }
            std::thread::yield_now();
        }
    }

    /// After polling caught nothing and a blocking read returned: adapts the window to
    /// how long after `opened` the next command (or the end of the connection) came.
    #[inline(never)]
    pub fn missed(&mut self, opened: Instant) {
        let waited = opened.elapsed();
        self.window = if waited <= MAX_WINDOW {
            (self.window * 2).clamp(FIRST_WINDOW, MAX_WINDOW)
        } else if self.window / 2 >= FIRST_WINDOW {
            self.window / 2
        } else {
            Duration::ZERO
        };
    }

    #[cfg(test)]
    fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_for_close_commands_and_closes_when_idle() {
        let ago = |waited: Duration| Instant::now() - waited;
        let mut poller = Poller::default();
        assert!(poller.window().is_zero(), "no polling before traffic");
        poller.missed(ago(Duration::ZERO));
        assert_eq!(poller.window(), FIRST_WINDOW);
        for _ in 0..10 {
            poller.missed(ago(Duration::ZERO));
        }
        assert_eq!(poller.window(), MAX_WINDOW, "capped");
        poller.missed(ago(Duration::from_millis(5)));
        assert_eq!(poller.window(), MAX_WINDOW / 2);
        for _ in 0..3 {
            poller.missed(ago(Duration::from_secs(1)));
        }
        assert!(poller.window().is_zero(), "an idle channel is not polled");
    }

    #[test]
    fn polling_catches_a_command_that_is_there_and_gives_up_after_the_window() {
        use std::io::Write;
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;
        let (mut client, daemon) = UnixStream::pair().unwrap();
        let mut poller = Poller::default();
        poller.missed(Instant::now());
        let mut buf = [0u8; 16];
        let started = Instant::now();
        assert!(matches!(
            poller.poll(daemon.as_fd(), &mut buf).unwrap(),
            Polled::Nothing(_)
        ));
        assert!(started.elapsed() >= FIRST_WINDOW);
        client.write_all(b"command").unwrap();
        assert_eq!(
            poller.poll(daemon.as_fd(), &mut buf).unwrap(),
            Polled::Read(7)
        );
    }
}
