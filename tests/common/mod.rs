//! Test harness shared by the integration tests: backend daemons (vtpm or Debian's
//! swtpm), a real QEMU driven over qtest and QMP, TIS/CRB drivers that play the guest,
//! and spec-exact TPM 2 command builders.
//!
//! Each `tests/*.rs` does `#[allow(dead_code)] mod common;` and uses a subset.

pub mod backend;
pub mod crb;
pub mod ctrl;
pub mod data;
pub mod line_stream;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod qtest;
pub mod tis;
pub mod tool;
pub mod tpm12;
pub mod tpm2;

use std::path::Path;
use std::time::{Duration, Instant};

// Each test binary uses a subset of these.
#[allow(unused_imports)]
pub use backend::{Backend, BackendPaths, RunningBackend};
#[allow(unused_imports)]
pub use qemu::{Machine, Qemu, QemuOptions, TpmDevice};
#[allow(unused_imports)]
pub use tpm2::{StartupType, Tpm2, TpmError, TpmTransport};

/// Calls `f` until it returns `Some`, pausing briefly (with back-off) between tries.
/// Panics once `deadline` passes, naming `what` was awaited.
pub fn poll_until<T>(deadline: Instant, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A fresh temp dir directly under /tmp with a short name, so that the unix socket
/// paths inside it stay well below the 107-byte `sun_path` limit.
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vtpm-")
        .tempdir_in("/tmp")
        .expect("create temp dir under /tmp")
}

/// Reads a file for a diagnostic message; never fails.
pub fn read_for_diagnostics(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => format!("<cannot read {}: {err}>", path.display()),
    }
}
