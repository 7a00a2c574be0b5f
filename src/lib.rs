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
