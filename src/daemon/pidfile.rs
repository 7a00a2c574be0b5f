//! `--pid file=|fd=`: the daemon's PID, written once the options are parsed and removed
//! when the daemon exits (swtpm_setup waits for it to become non-empty).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::cli::PidOptions;
use crate::io::fd::take_inherited;

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("Could not open pidfile {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Bad filedescriptor {fd} for pid file: it must be an open regular file")]
    BadFd { fd: i32 },
    #[error("Could not write pidfile {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A written pid file; [`PidFile::remove`] deletes it at exit.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn write(options: &PidOptions) -> Result<PidFile, PidFileError> {
        let (mut file, path) = match options {
            PidOptions::File(path) => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o644)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|source| PidFileError::Open {
                        path: path.clone(),
                        source,
                    })?;
                (file, path.clone())
            }
            PidOptions::Fd(fd) => {
                let bad = || PidFileError::BadFd { fd: *fd };
                let file = File::from(take_inherited(*fd).map_err(|_| bad())?);
                if !file.metadata().map_err(|_| bad())?.is_file() {
                    return Err(bad());
                }
                // The path is needed to remove the file at exit.
                let path = fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|_| bad())?;
                (file, path)
            }
        };
        let wrap = |source| PidFileError::Write {
            path: path.clone(),
            source,
        };
        file.set_len(0).map_err(wrap)?;
        file.rewind().map_err(wrap)?;
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(wrap)?;
        Ok(PidFile { path })
    }

    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}
