//! swtpm_setup's log: appended to `--logfile` (shared with the daemon, which gets the
//! same file), or progress on stdout and errors on stderr without one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub struct SetupLog {
    file: Option<File>,
}

impl SetupLog {
    pub fn stdio() -> SetupLog {
        SetupLog { file: None }
    }

    /// Opens `path` for appending; a symbolic link is refused so that a log directory
    /// writable by others cannot redirect the writes of a privileged run.
    pub fn open(path: &Path) -> io::Result<SetupLog> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(SetupLog { file: Some(file) })
    }

    pub fn info(&mut self, message: &str) {
        match &mut self.file {
            Some(file) => append_line(file, message),
            None => println!("{message}"),
        }
    }

    /// Errors go to the log file and to stderr, where a person running the tool looks.
    pub fn error(&mut self, message: &str) {
        if let Some(file) = &mut self.file {
            append_line(file, message);
        }
        eprintln!("{message}");
    }
}

/// One write per line: the daemon appends to the same file, and lines must not mix.
fn append_line(file: &mut File, message: &str) {
    let _ = file.write_all(format!("{message}\n").as_bytes());
}
