//! The client tools that come with swtpm: `swtpm_ioctl` (control channel) and
//! `swtpm_bios` (BIOS-style start-up over the data channel).
//!
//! They sit beside the daemon, not inside it: they know the wire codecs
//! ([`crate::ctrl::protocol`], [`crate::tpm`]) and the connected [`Stream`] type, and
//! nothing of the emulator. The parts both tools share — swtpm's odd command-line
//! scanner, `strtoul`-style numbers, the `--tcp` syntax and connecting with deadlines —
//! live here; each tool's own module holds its arguments, help text and run logic.
//!
//! [`Stream`]: crate::io::socket::Stream

pub mod bios;
pub mod getopt;
pub mod ioctl;
pub mod number;
pub mod target;
pub mod transport;

use std::io::{self, Write};

use nix::errno::Errno;

/// The version both tools print.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The C library's text for an OS error (`strerror`), which is what swtpm's tools print
/// after a colon; Rust's own rendering appends "(os error N)".
pub fn os_reason(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => Errno::from_raw(code).desc().to_owned(),
        None => err.to_string(),
    }
}

/// Prints `text` on stdout and returns `status`, or 1 if stdout cannot take it.
pub fn print_out(text: &str, status: u8) -> u8 {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => status,
        Err(_) => 1,
    }
}

/// A line on stderr; nothing else is left to tell if stderr is gone.
pub fn print_err(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
