//! vtpm: a virtual TPM backend for QEMU and libvirt, a drop-in replacement for swtpm
//! built on the system libtpms.

pub mod cli;
pub mod ctrl;
pub mod libtpms;
pub mod state;
pub mod tpm;
