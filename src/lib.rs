//! vtpm: a virtual TPM backend for QEMU and libvirt, a drop-in replacement for swtpm
//! built on the system libtpms.

pub mod libtpms;
pub mod tpm;
