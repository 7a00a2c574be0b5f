//! Where the TPM state goes (`--tpm-state`): a directory (`dir://`, or a plain path)
//! or one file (`file://`). swtpm_setup checks it, deletes old state when asked to, and
//! removes what it made when manufacturing fails.

use std::fs;
use std::io::{self, Seek, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::localca::store::current_user;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateLocation {
    Dir(PathBuf),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("user {user} cannot write to the TPM state directory {}: {cause}; make sure it exists, is a directory and is writable by this user", path.display())]
    DirAccess {
        path: PathBuf,
        user: String,
        cause: io::Error,
    },
    #[error("user {user} cannot create or write the TPM state file {}: {cause}", path.display())]
    FileAccess {
        path: PathBuf,
        user: String,
        cause: io::Error,
    },
    #[error("cannot remove the TPM state {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--tpm-state '{0}' names no storage: give a directory, dir://<dir> or file://<file>")]
    Empty(String),
}

impl StateLocation {
    pub fn parse(option: &str) -> Result<StateLocation, StateError> {
        let location = if let Some(path) = option.strip_prefix("dir://") {
            StateLocation::Dir(path.into())
        } else if let Some(path) = option.strip_prefix("file://") {
            StateLocation::File(path.into())
        } else {
            StateLocation::Dir(option.into())
        };
        match &location {
            StateLocation::Dir(path) | StateLocation::File(path) if path.as_os_str().is_empty() => {
                Err(StateError::Empty(option.to_string()))
            }
            _ => Ok(location),
        }
    }

    /// The `backend-uri=` value for the daemon.
    pub fn uri(&self) -> String {
        match self {
            StateLocation::Dir(path) => format!("dir://{}", path.display()),
            StateLocation::File(path) => format!("file://{}", path.display()),
        }
    }

    /// Checks that this user can write the state before any daemon runs.
    pub fn check_writable(&self) -> Result<(), StateError> {
        use nix::unistd::{AccessFlags, access};
        match self {
            StateLocation::Dir(path) => {
                let is_dir = fs::metadata(path)
                    .map_err(|source| dir_err(path, source))?
                    .is_dir();
                if !is_dir {
                    return Err(dir_err(path, io::Error::from_raw_os_error(libc::ENOTDIR)));
                }
                access(path.as_path(), AccessFlags::W_OK | AccessFlags::X_OK)
                    .map_err(|errno| dir_err(path, errno.into()))
            }
            StateLocation::File(path) => {
                let target = if path.exists() {
                    path.clone()
                } else {
                    path.parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new("."))
                        .to_path_buf()
                };
                access(target.as_path(), AccessFlags::W_OK).map_err(|errno| {
                    StateError::FileAccess {
                        path: path.clone(),
                        user: current_user(),
                        cause: errno.into(),
                    }
                })
            }
        }
    }

    /// Deletes the state: in a directory every file whose name ends in `permall`,
    /// `volatilestate` or `savestate` (also those of the other TPM version, as swtpm
    /// does); a state file is unlinked, a block device has its header zeroed.
    pub fn delete(&self) -> Result<(), StateError> {
        let remove_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Remove { path, source }
        };
        match self {
            StateLocation::Dir(dir) => {
                let entries = match fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(err) => return Err(remove_err(dir)(err)),
                };
                for entry in entries {
                    let entry = entry.map_err(remove_err(dir))?;
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if ["permall", "volatilestate", "savestate"]
                        .iter()
                        .any(|suffix| name.ends_with(suffix))
                    {
                        let path = entry.path();
                        fs::remove_file(&path).map_err(remove_err(&path))?;
                    }
                }
                Ok(())
            }
            StateLocation::File(path) => match fs::metadata(path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(remove_err(path)(err)),
                Ok(meta) if meta.file_type().is_block_device() => {
                    let mut device = fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(remove_err(path))?;
                    device.rewind().map_err(remove_err(path))?;
                    device.write_all(&[0; 8]).map_err(remove_err(path))
                }
                Ok(_) => fs::remove_file(path).map_err(remove_err(path)),
            },
        }
    }
}

fn dir_err(path: &Path, cause: io::Error) -> StateError {
    StateError::DirAccess {
        path: path.to_path_buf(),
        user: current_user(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_uris() {
        assert_eq!(StateLocation::parse("/s").unwrap().uri(), "dir:///s");
        assert_eq!(
            StateLocation::parse("dir:///s").unwrap(),
            StateLocation::Dir("/s".into())
        );
        assert_eq!(
            StateLocation::parse("file:///s/tpm").unwrap(),
            StateLocation::File("/s/tpm".into())
        );
        assert!(StateLocation::parse("dir://").is_err());
        assert!(StateLocation::parse("").is_err());
    }
}
