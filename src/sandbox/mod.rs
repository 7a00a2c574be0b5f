//! Least privilege for the daemon: `--chroot`, `--runas`, dropping capabilities once the
//! sockets are bound, and a seccomp allow-list before serving.

pub mod privileges;
pub mod seccomp;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("Error: chroot to {path} failed")]
    Chroot {
        path: std::path::PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("Error: User '{0}' does not exist.")]
    NoSuchUser(String),
    #[error("Error: uid {0} outside valid range.")]
    UidOutOfRange(String),
    #[error("Error: could not switch to user {user} ({step})")]
    SwitchUser {
        user: String,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("could not drop capabilities")]
    Capabilities(#[source] caps::errors::CapsError),
    #[error("could not install the seccomp filter")]
    Seccomp(#[source] ::seccompiler::Error),
    #[error("could not build the seccomp filter")]
    SeccompFilter(#[source] ::seccompiler::BackendError),
}
