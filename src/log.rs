//! The daemon's log, with swtpm's rules (cli.md §3.3): one sink (stderr, a file or an
//! inherited fd), a level, and a prefix. A message indented by k spaces is written only
//! when k < level, so level 1 shows unindented messages (errors) only.
//!
//! The log is process-global because both daemon threads and libtpms' callbacks write
//! to it; the level is an atomic so that a disabled message costs one load.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

struct Sink {
    out: Option<File>,
    prefix: String,
}

static LEVEL: AtomicU32 = AtomicU32::new(1);
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Where log lines go.
pub enum Destination {
    Stderr,
    File(File),
    Nowhere,
}

/// Replaces the log's sink, level and prefix.
pub fn configure(destination: Destination, level: u32, prefix: String) {
    let out = match destination {
        Destination::Stderr => None,
        Destination::File(file) => Some(file),
        Destination::Nowhere => {
            LEVEL.store(0, Ordering::Relaxed);
            *lock_sink() = None;
            return;
        }
    };
    *lock_sink() = Some(Sink { out, prefix });
    LEVEL.store(level, Ordering::Relaxed);
}

fn lock_sink() -> std::sync::MutexGuard<'static, Option<Sink>> {
    SINK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn level() -> u32 {
    LEVEL.load(Ordering::Relaxed)
}

/// The fd log lines go to, for libtpms' own debug output; `None` when logging is off.
pub fn raw_fd() -> Option<RawFd> {
    let sink = lock_sink();
    match sink.as_ref() {
        Some(Sink {
            out: Some(file), ..
        }) => Some(file.as_raw_fd()),
        Some(Sink { out: None, .. }) => Some(libc::STDERR_FILENO),
        None if level() > 0 => Some(libc::STDERR_FILENO),
        None => None,
    }
}

/// The prefix of each line (swtpm's default is `swtpm: `).
pub fn prefix() -> String {
    lock_sink()
        .as_ref()
        .map_or_else(|| "swtpm: ".to_owned(), |sink| sink.prefix.clone())
}

/// Whether a message with `indent` leading spaces would be written.
pub fn enabled(indent: u32) -> bool {
    indent < level()
}

/// Writes one line, unless its indentation hides it at the current level.
pub fn write_line(indent: u32, message: std::fmt::Arguments<'_>) {
    if !enabled(indent) {
        return;
    }
    let mut line = String::new();
    let mut sink = lock_sink();
    let (out, prefix): (Option<&mut File>, &str) = match sink.as_mut() {
        Some(Sink { out, prefix }) => (out.as_mut(), prefix),
        None => (None, "swtpm: "),
    };
    line.push_str(prefix);
    line.extend(std::iter::repeat_n(' ', indent as usize));
    use std::fmt::Write as _;
    let _ = line.write_fmt(message);
    line.push('\n');
    // A log that cannot be written must not take the TPM down with it.
    let _ = match out {
        Some(file) => file.write_all(line.as_bytes()),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
}

/// Errors: always written unless logging is off.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => { $crate::log::write_line(0, format_args!($($arg)*)) };
}

/// Notable events (a client connected, a TPM started): level 2 and up.
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::log::write_line(1, format_args!($($arg)*)) };
}

/// Protocol traces: level 3 and up.
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)*) => { $crate::log::write_line(2, format_args!($($arg)*)) };
}

/// Formats an error and its causes on one line, each cause once: a message that shows
/// its cause already (`{source}` in its format) is not followed by it again.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(source) = cause {
        let message = source.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = source.source();
    }
    text
}
