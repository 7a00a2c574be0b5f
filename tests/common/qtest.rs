//! Client for QEMU's qtest line protocol (QEMU 7.2): MMIO and RAM loads and stores.
//!
//! QEMU aborts on a known command with missing arguments, so every line is checked by
//! `validate_command` before it is sent.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::line_stream::LineStream;

/// How long one qtest round trip may take. Normal is ~70 µs; a hang (qemu-testing.md
/// §6.4) must fail the test rather than block it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Qtest {
    conn: LineStream,
}

impl Qtest {
    pub fn new(stream: UnixStream) -> Qtest {
        Qtest {
            conn: LineStream::new(stream).expect("configure qtest socket"),
        }
    }

    pub fn readb(&mut self, addr: u64) -> u8 {
        self.load("readb", addr, u8::MAX.into()) as u8
    }

    pub fn readw(&mut self, addr: u64) -> u16 {
        self.load("readw", addr, u16::MAX.into()) as u16
    }

    pub fn readl(&mut self, addr: u64) -> u32 {
        self.load("readl", addr, u32::MAX.into()) as u32
    }

    pub fn writeb(&mut self, addr: u64, value: u8) {
        self.store("writeb", addr, value.into());
    }

    pub fn writew(&mut self, addr: u64, value: u16) {
        self.store("writew", addr, value.into());
    }

    pub fn writel(&mut self, addr: u64, value: u32) {
        self.store("writel", addr, value.into());
    }

    /// `len` bytes starting at `addr`, in address order.
    pub fn read(&mut self, addr: u64, len: usize) -> Vec<u8> {
        assert!(len > 0, "qtest read of 0 bytes");
        let reply = self.command(&format!("read {addr:#x} {len:#x}"));
        let hex = reply
            .strip_prefix("0x")
            .unwrap_or_else(|| panic!("qtest read: unexpected reply {reply:?}"));
        let bytes = decode_hex(hex).unwrap_or_else(|| panic!("qtest read: bad hex {hex:?}"));
        assert_eq!(bytes.len(), len, "qtest read returned the wrong length");
        bytes
    }

    /// Stores `data` at `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        assert!(!data.is_empty(), "qtest write of 0 bytes");
        let reply = self.command(&format!(
            "write {addr:#x} {:#x} 0x{}",
            data.len(),
            encode_hex(data)
        ));
        assert_eq!(reply, "", "qtest write: unexpected reply");
    }

    fn load(&mut self, verb: &str, addr: u64, max: u64) -> u64 {
        let reply = self.command(&format!("{verb} {addr:#x}"));
        let value = reply
            .strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("qtest {verb} {addr:#x}: unexpected reply {reply:?}"));
        assert!(
            value <= max,
            "qtest {verb} {addr:#x}: value {value:#x} too wide"
        );
        value
    }

    fn store(&mut self, verb: &str, addr: u64, value: u64) {
        let reply = self.command(&format!("{verb} {addr:#x} {value:#x}"));
        assert_eq!(reply, "", "qtest {verb}: unexpected reply");
    }

    /// Sends one validated command; returns what follows `OK` (trimmed). Panics on
    /// `FAIL`, on EOF and after `REPLY_TIMEOUT`.
    fn command(&mut self, line: &str) -> String {
        if let Err(why) = validate_command(line) {
            panic!("refusing to send malformed qtest command {line:?}: {why}");
        }
        self.conn
            .send_line(line)
            .unwrap_or_else(|err| panic!("qtest send {line:?}: {err}"));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let reply = self
                .conn
                .read_line(deadline)
                .unwrap_or_else(|err| panic!("qtest reply to {line:?}: {err}"));
            // Interrupt notifications are asynchronous; they only come after
            // irq_intercept_*, but a robust reader skips them anyway.
            if reply.starts_with("IRQ") {
                continue;
            }
            if reply == "OK" {
                return String::new();
            }
            if let Some(rest) = reply.strip_prefix("OK ") {
                return rest.trim().to_string();
            }
            panic!("qtest {line:?} failed: {reply:?}");
        }
    }
}

/// Checks a qtest command line against the forms this client uses: a known verb, the
/// exact number of arguments, and `0x`-prefixed hex numbers (QEMU parses like strtoull
/// with base 0, so a bare leading 0 would mean octal).
pub fn validate_command(line: &str) -> Result<(), String> {
    let words: Vec<&str> = line.split(' ').collect();
    let arity = match words[0] {
        "readb" | "readw" | "readl" | "readq" => 1,
        "writeb" | "writew" | "writel" | "writeq" | "read" => 2,
        "write" => 3,
        other => return Err(format!("verb {other:?} is not supported by this client")),
    };
    if words.len() != 1 + arity {
        return Err(format!("{} takes {arity} arguments", words[0]));
    }
    for word in &words[1..] {
        let hex = word
            .strip_prefix("0x")
            .ok_or_else(|| format!("argument {word:?} lacks the 0x prefix"))?;
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("argument {word:?} is not hex"));
        }
    }
    Ok(())
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}
