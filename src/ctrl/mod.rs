//! The control channel: its wire protocol, reading requests, and handling them.

pub mod connection;
pub mod handler;
pub mod protocol;
