//! `--key` and `--migration-key` at start-up (cli.md §3.4, §3.5): reads the key file,
//! key fd, passphrase file or passphrase fd, makes the key (`state::key`), closes the fd
//! and removes the file if asked. The buffers that held key material are wiped.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::cli::{KeyOptions, KeySource};
use crate::io::fd::take_inherited;
use crate::state::key::{self, AesKey, KeyError, KeyFormat};

/// swtpm reads at most this much of a key file or key fd: `0x`, 64 hex digits and a
/// newline. Anything longer is not a key, and the message says how much was read.
const KEY_READ_LIMIT: usize = 67;
/// A passphrase is read whole; this bound only stops a runaway source (`/dev/zero`).
const PASSPHRASE_READ_LIMIT: usize = 64 * 1024;
const READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("Unable to open file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Unable to read key")]
    ReadKey(#[source] io::Error),
    #[error("Unable to read passphrase")]
    ReadPassphrase(#[source] io::Error),
    #[error("The passphrase is longer than {PASSPHRASE_READ_LIMIT} bytes")]
    PassphraseTooLong,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("Could not remove key file {path} as asked by remove=")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the key material `options` name and makes the key.
pub fn load_key(options: &KeyOptions) -> Result<AesKey, KeyLoadError> {
    let key = match &options.source {
        KeySource::File(path) => {
            let material = read_key(&mut open(path)?)?;
            key_from_material(&material, options)?
        }
        KeySource::Fd(fd) => {
            let mut file = File::from(take_inherited(*fd).map_err(KeyLoadError::ReadKey)?);
            key_from_material(&read_key(&mut file)?, options)?
        }
        KeySource::PassphraseFile(path) => {
            let passphrase = read_passphrase(&mut open(path)?)?;
            key::key_from_passphrase(&passphrase, options.kdf, options.size)
        }
        KeySource::PassphraseFd(fd) => {
            let mut file = File::from(take_inherited(*fd).map_err(KeyLoadError::ReadPassphrase)?);
            let passphrase = read_passphrase(&mut file)?;
            key::key_from_passphrase(&passphrase, options.kdf, options.size)
        }
    };
    // Only a file that gave a key is removed: a bad one stays for the user to fix.
    if options.remove {
        if let KeySource::File(path) | KeySource::PassphraseFile(path) = &options.source {
            fs::remove_file(path).map_err(|source| KeyLoadError::Remove {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(key)
}

fn open(path: &Path) -> Result<File, KeyLoadError> {
    File::open(path).map_err(|source| KeyLoadError::Open {
        path: path.to_owned(),
        source,
    })
}

fn key_from_material(material: &[u8], options: &KeyOptions) -> Result<AesKey, KeyError> {
    match options.format {
        KeyFormat::Hex => key::key_from_hex(material, options.size),
        KeyFormat::Binary => key::key_from_binary(material, options.size),
    }
}

fn read_key(source: &mut impl Read) -> Result<Zeroizing<Vec<u8>>, KeyLoadError> {
    read_until_short(source, KEY_READ_LIMIT).map_err(KeyLoadError::ReadKey)
}

fn read_passphrase(source: &mut impl Read) -> Result<Zeroizing<Vec<u8>>, KeyLoadError> {
    let passphrase = read_until_short(source, PASSPHRASE_READ_LIMIT + 1)
        .map_err(KeyLoadError::ReadPassphrase)?;
    if passphrase.len() > PASSPHRASE_READ_LIMIT {
        return Err(KeyLoadError::PassphraseTooLong);
    }
    Ok(passphrase)
}

/// Reads up to `limit` bytes, stopping at the end of the data or at a read that returns
/// less than it was asked for. The second rule is swtpm's: a parent that wrote the key
/// into a pipe in one write and keeps its end open must not make start-up hang.
///
/// The buffer is allocated once at its full size, so that no copy of the material is
/// left behind in freed memory, and it is wiped when dropped.
fn read_until_short(source: &mut impl Read, limit: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(vec![0u8; limit]);
    let mut filled = 0;
    while filled < limit {
        let wanted = READ_CHUNK.min(limit - filled);
        let got = match source.read(&mut buffer[filled..filled + wanted]) {
            Ok(got) => got,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        filled += got;
        if got < wanted {
            break;
        }
    }
    buffer.truncate(filled);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::key::{Kdf, KeySize};
    use std::io::Write;

    fn options(source: KeySource, format: KeyFormat, size: KeySize) -> KeyOptions {
        KeyOptions {
            source,
            format,
            size,
            kdf: Kdf::Pbkdf2,
            remove: false,
        }
    }

    /// Hands out its data in the pieces given, like a pipe written in several writes.
    struct Pieces(Vec<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = &mut self.0[0];
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    #[test]
    fn reads_stop_at_a_short_read_or_the_limit() {
        let mut one_write = Pieces(vec![b"secret\n".to_vec(), b"later".to_vec()]);
        assert_eq!(
            &read_until_short(&mut one_write, 100).unwrap()[..],
            b"secret\n"
        );
        let mut long = Pieces(vec![vec![7; 5000]]);
        assert_eq!(read_until_short(&mut long, 67).unwrap().len(), 67);
        let mut long = Pieces(vec![vec![7; 10_000]]);
        assert_eq!(read_until_short(&mut long, 20_000).unwrap().len(), 10_000);
        let mut empty = Pieces(vec![]);
        assert!(read_until_short(&mut empty, 10).unwrap().is_empty());
    }

    #[test]
    fn key_and_passphrase_files() {
        let dir = tempfile::tempdir().unwrap();
        let hex = dir.path().join("hex");
        fs::write(&hex, "00112233445566778899aabbccddeeff\n").unwrap();
        let key = load_key(&options(
            KeySource::File(hex.clone()),
            KeyFormat::Hex,
            KeySize::Aes128,
        ))
        .unwrap();
        assert_eq!(key.bytes()[..4], [0x00, 0x11, 0x22, 0x33]);
        assert!(hex.exists(), "kept without remove");

        let pass = dir.path().join("pass");
        fs::write(&pass, "secret\n").unwrap();
        let opts = KeyOptions {
            remove: true,
            ..options(
                KeySource::PassphraseFile(pass.clone()),
                KeyFormat::Hex,
                KeySize::Aes256,
            )
        };
        let key = load_key(&opts).unwrap();
        assert_eq!(
            key.bytes(),
            key::key_from_passphrase(b"secret\n", Kdf::Pbkdf2, KeySize::Aes256).bytes()
        );
        assert!(!pass.exists(), "removed after reading");
    }

    #[test]
    fn a_bad_key_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::File::create(&bin)
            .unwrap()
            .write_all(&[1; 100])
            .unwrap();
        let opts = KeyOptions {
            remove: true,
            ..options(
                KeySource::File(bin.clone()),
                KeyFormat::Binary,
                KeySize::Aes128,
            )
        };
        let err = load_key(&opts).unwrap_err();
        assert_eq!(err.to_string(), "Key is larger than buffer (67 > 16).");
        assert!(bin.exists());
    }

    #[test]
    fn missing_file_is_named() {
        let err = load_key(&options(
            KeySource::File("/nonexistent/key".into()),
            KeyFormat::Hex,
            KeySize::Aes128,
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "Unable to open file /nonexistent/key");
        assert!(matches!(err, KeyLoadError::Open { .. }));
    }
}
