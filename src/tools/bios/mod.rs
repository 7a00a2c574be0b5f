//! `swtpm_bios`: sends the TPM commands a BIOS sends at start-up, over the data channel
//! (cli.md §13).
//!
//! [`args`] reads the command line and environment into an [`args::Plan`];
//! [`sequence`] turns it into the commands ([`commands`] builds their bytes); [`run`]
//! sends them, one connection each.

pub mod args;
pub mod commands;
pub mod help;
pub mod run;
pub mod sequence;

/// `--tcp` without a port, and `TCSD_USE_TCP_DEVICE` without `TCSD_TCP_DEVICE_PORT`.
pub const DEFAULT_PORT: u16 = 6545;
