//! The sockets of both channels: listeners created from `--ctrl`/`--server` options or
//! inherited by fd, and the connected streams they yield.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::stat::{SFlag, fstat};
use nix::unistd::{Gid, Group, Uid, User};

use super::fd::take_inherited;
use crate::cli::{ListenSpec, Owner};

/// The longest UNIX socket path (`sun_path` minus its NUL).
const MAX_UNIX_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("Path for UnixIO socket is too long: {0}")]
    PathTooLong(PathBuf),
    #[error("Could not open UnixIO socket {path}: {source}")]
    BindUnix { path: PathBuf, source: io::Error },
    #[error("Could not set mode {mode:o} on socket {path}: {source}")]
    Chmod {
        path: PathBuf,
        mode: u32,
        source: io::Error,
    },
    #[error("Could not set owner of socket {path}: {source}")]
    Chown { path: PathBuf, source: nix::Error },
    #[error("User '{0}' does not exist.")]
    NoSuchUser(String),
    #[error("Group '{0}' does not exist.")]
    NoSuchGroup(String),
    #[error("Could not open TCP socket on {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("Could not convert interface name '{name}' to index: {source}")]
    Interface { name: String, source: nix::Error },
    #[error("Bad filedescriptor {fd} for {purpose}: {reason}")]
    BadFd {
        fd: RawFd,
        purpose: &'static str,
        reason: String,
    },
}

/// A listening socket.
pub enum Listener {
    /// `created` is the path we bound, removed again when the daemon exits.
    Unix {
        listener: UnixListener,
        created: Option<PathBuf>,
    },
    Tcp(TcpListener),
}

/// A connected channel: a socket, or (chardev mode) any readable and writable file.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    File(File),
}

impl Listener {
    /// Creates (or adopts) the listener of `spec`; `purpose` names the channel in errors.
    pub fn open(spec: &ListenSpec, purpose: &'static str) -> Result<Listener, SocketError> {
        match spec {
            ListenSpec::UnixPath {
                path,
                mode,
                uid,
                gid,
            } => bind_unix(path, *mode, uid, gid),
            ListenSpec::UnixFd(fd) => {
                let owned = take_socket(*fd, purpose)?;
                Ok(Listener::Unix {
                    listener: UnixListener::from(owned),
                    created: None,
                })
            }
            ListenSpec::Tcp {
                bindaddr,
                port,
                ifname,
            } => {
                let addr = match (bindaddr, ifname) {
                    (std::net::IpAddr::V6(ip), Some(name)) => {
                        SocketAddr::V6(SocketAddrV6::new(*ip, *port, 0, interface_index(name)?))
                    }
                    (ip, _) => SocketAddr::new(*ip, *port),
                };
                // std sets SO_REUSEADDR, as swtpm does.
                TcpListener::bind(addr)
                    .map(Listener::Tcp)
                    .map_err(|source| SocketError::BindTcp { addr, source })
            }
            ListenSpec::TcpFd(fd) => {
                Ok(Listener::Tcp(TcpListener::from(take_socket(*fd, purpose)?)))
            }
        }
    }

    /// Waits for the next client.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix { listener, .. } => {
                listener.accept().map(|(stream, _)| Stream::Unix(stream))
            }
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                // One write per response already; this keeps the kernel from holding it.
                let _ = stream.set_nodelay(true);
                Ok(Stream::Tcp(stream))
            }
        }
    }

    /// The socket file this listener created, to be removed at exit.
    pub fn created_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix { created, .. } => created.as_deref(),
            Listener::Tcp(_) => None,
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix { listener, .. } => listener.as_fd(),
            Listener::Tcp(listener) => listener.as_fd(),
        }
    }
}

fn bind_unix(
    path: &Path,
    mode: u32,
    uid: &Option<Owner>,
    gid: &Option<Owner>,
) -> Result<Listener, SocketError> {
    if path.as_os_str().len() > MAX_UNIX_PATH {
        return Err(SocketError::PathTooLong(path.to_owned()));
    }
    // Whatever is at the path is replaced, as swtpm does (libvirt unlinks stale sockets
    // itself, but a crashed daemon's socket must not block the next start).
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| SocketError::BindUnix {
        path: path.to_owned(),
        source,
    })?;
    let created = Listener::Unix {
        listener,
        created: Some(path.to_owned()),
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        SocketError::Chmod {
            path: path.to_owned(),
            mode,
            source,
        }
    })?;
    let owner = uid.as_ref().map(resolve_user).transpose()?;
    let group = gid.as_ref().map(resolve_group).transpose()?;
    if owner.is_some() || group.is_some() {
        nix::unistd::chown(path, owner, group).map_err(|source| SocketError::Chown {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(created)
}

fn resolve_user(owner: &Owner) -> Result<Uid, SocketError> {
    match owner {
        Owner::Id(id) => Ok(Uid::from_raw(*id)),
        Owner::Name(name) => match User::from_name(name) {
            Ok(Some(user)) => Ok(user.uid),
            _ => Err(SocketError::NoSuchUser(name.clone())),
        },
    }
}

fn resolve_group(owner: &Owner) -> Result<Gid, SocketError> {
    match owner {
        Owner::Id(id) => Ok(Gid::from_raw(*id)),
        Owner::Name(name) => match Group::from_name(name) {
            Ok(Some(group)) => Ok(group.gid),
            _ => Err(SocketError::NoSuchGroup(name.clone())),
        },
    }
}

fn interface_index(name: &str) -> Result<u32, SocketError> {
    nix::net::if_::if_nametoindex(name).map_err(|source| SocketError::Interface {
        name: name.to_owned(),
        source,
    })
}

/// Adopts an inherited fd that must be a socket.
pub fn take_socket(fd: RawFd, purpose: &'static str) -> Result<OwnedFd, SocketError> {
    let bad = |reason: String| SocketError::BadFd {
        fd,
        purpose,
        reason,
    };
    let owned = take_inherited(fd).map_err(|err| bad(err.to_string()))?;
    let stat = fstat(&owned).map_err(|err| bad(err.to_string()))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(bad("not a socket".to_owned()));
    }
    Ok(owned)
}

impl Stream {
    /// A connected stream from an inherited descriptor: a socket, or for chardev mode a
    /// character device or pipe.
    pub fn from_owned(fd: OwnedFd) -> io::Result<Stream> {
        let file = File::from(fd);
        let kind = file.metadata()?.file_type();
        if kind.is_socket() {
            let fd = OwnedFd::from(file);
            // A UNIX socket can carry fds; any other family is only read and written.
            return Ok(
                match nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd.as_raw_fd()) {
                    Ok(_) => Stream::Unix(UnixStream::from(fd)),
                    Err(_) => Stream::Tcp(TcpStream::from(fd)),
                },
            );
        }
        Ok(Stream::File(file))
    }

    /// Whether SCM_RIGHTS can arrive on this stream.
    /// A socket (not a character device): `recv` and its flags apply.
    pub fn is_socket(&self) -> bool {
        matches!(self, Stream::Unix(_) | Stream::Tcp(_))
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(stream) => stream.as_fd(),
            Stream::Tcp(stream) => stream.as_fd(),
            Stream::File(file) => file.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(stream) => stream.read(buf),
            Stream::Tcp(stream) => stream.read(buf),
            Stream::File(file) => file.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(stream) => stream.write(buf),
            Stream::Tcp(stream) => stream.write(buf),
            Stream::File(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
