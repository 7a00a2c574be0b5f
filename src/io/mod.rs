//! Descriptors, sockets and byte-stream framing shared by both channels.

pub mod fd;
pub mod framing;
pub mod socket;
pub mod vtpm_proxy;
