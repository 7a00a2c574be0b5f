//! `swtpm_ioctl`: sends one control command to a running emulator (cli.md §12).
//!
//! [`args`] turns the command line into an [`args::Invocation`] (or help, version, a
//! refusal); [`run::run`] connects and runs it; the binary prints and maps exit codes.

pub mod args;
pub mod help;
pub mod run;

use std::time::Duration;

use crate::ctrl::protocol::Command;

/// `--tcp` without a port. (swtpm_ioctl's man page says 6545, its code uses 6546.)
pub const DEFAULT_PORT: u16 = 6546;
/// How long to wait for a connection and for each response. swtpm_ioctl 0.10.2 waits
/// 10 s (0.7.1 observed: 20 s).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The name swtpm_ioctl gives a command in its messages (its CUSE ioctl's name).
pub fn ptm_name(command: Command) -> &'static str {
    match command {
        Command::GetCapability => "PTM_GET_CAPABILITY",
        Command::Init => "PTM_INIT",
        Command::Shutdown => "PTM_SHUTDOWN",
        Command::GetTpmEstablished => "PTM_GET_TPMESTABLISHED",
        Command::SetLocality => "PTM_SET_LOCALITY",
        Command::HashStart => "PTM_HASH_START",
        Command::HashData => "PTM_HASH_DATA",
        Command::HashEnd => "PTM_HASH_END",
        Command::CancelTpmCmd => "PTM_CANCEL_TPM_CMD",
        Command::StoreVolatile => "PTM_STORE_VOLATILE",
        Command::ResetTpmEstablished => "PTM_RESET_TPMESTABLISHED",
        Command::GetStateBlob => "PTM_GET_STATEBLOB",
        Command::SetStateBlob => "PTM_SET_STATEBLOB",
        Command::Stop => "PTM_STOP",
        Command::GetConfig => "PTM_GET_CONFIG",
        Command::SetDatafd => "PTM_SET_DATAFD",
        Command::SetBufferSize => "PTM_SET_BUFFERSIZE",
        Command::GetInfo => "PTM_GET_INFO",
        Command::LockStorage => "PTM_LOCK_STORAGE",
    }
}
