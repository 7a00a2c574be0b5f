//! vtpm: a virtual TPM backend for QEMU and libvirt, a drop-in replacement for swtpm
//! built on the system libtpms.

pub mod cli;
pub mod conffile;
pub mod ctrl;
pub mod daemon;
pub mod emulator;
pub mod io;
pub mod libtpms;
pub mod localca;
pub mod log;
pub mod sandbox;
pub mod setup;
pub mod state;
pub mod tools;
pub mod tpm;
#[macro_export]
macro_rules! xx_t {
    ($l:expr) => {
        if std::env::var_os("XX_T").is_some() {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
            eprintln!(
                "XX {} {}",
                t.tv_sec as i64 * 1_000_000_000 + t.tv_nsec as i64,
                $l
            );
        }
    };
}
