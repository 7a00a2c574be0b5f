//! The control channel: its wire protocol and the handling of each command.

pub mod protocol;
