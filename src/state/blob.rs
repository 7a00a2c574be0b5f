//! swtpm's wrapping of libtpms state: a 10-byte header followed by TLV records
//! (state-format.md §3 and §5). Pure codec: bytes in, bytes out, no I/O.
//!
//! Two layouts share the header: the *stored* form (state files, TLV 1 directly under
//! the header) and the *migration* form returned by GET_STATEBLOB (TLV 4 holding the
//! stored-form TLVs, header flag 0x4).

use crate::ctrl::protocol::result;

pub const HEADER_LEN: usize = 10;
const VERSION: u8 = 2;
const MIN_VERSION: u8 = 1;

/// Header flag: the payload is in migration layout (set on every GET_STATEBLOB blob).
pub const FLAG_MIGRATION_DATA: u16 = 0x0004;
/// Header flags this build cannot decrypt (state key, migration key).
const FLAGS_ENCRYPTED: u16 = 0x0001 | 0x0002;

pub const TAG_DATA: u16 = 1;
pub const TAG_ENCRYPTED_DATA: u16 = 2;
pub const TAG_MIGRATION_DATA: u16 = 4;
pub const TAG_ENCRYPTED_MIGRATION_DATA: u16 = 5;

/// Why a blob was refused, each mapped to the control-channel result swtpm gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("blob of {0} bytes is shorter than the 10-byte header")]
    TooShort(usize),
    #[error("blob header says {header} bytes but the blob has {actual}")]
    LengthMismatch { header: u32, actual: usize },
    #[error("blob needs header version {0}, newer than this build understands")]
    TooNew(u8),
    #[error("blob header size is {0}, not 10")]
    HeaderSize(u16),
    #[error("blob has unknown layout version {0}")]
    UnknownVersion(u8),
    #[error("blob has no {0} record")]
    MissingRecord(&'static str),
    #[error("blob is encrypted, and no key to decrypt it is configured")]
    KeyNotFound,
}

impl BlobError {
    /// The TPM result swtpm answers SET_STATEBLOB (or a load) with for this failure.
    pub fn result_code(&self) -> u32 {
        match self {
            BlobError::TooShort(_) | BlobError::LengthMismatch { .. } => result::TPM_BAD_PARAMETER,
            BlobError::TooNew(_) => result::TPM_BAD_VERSION,
            BlobError::HeaderSize(_) => result::TPM_BAD_DATASIZE,
            BlobError::UnknownVersion(_) | BlobError::MissingRecord(_) => result::TPM_FAIL,
            BlobError::KeyNotFound => result::TPM_KEYNOTFOUND,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    version: u8,
    flags: u16,
}

/// Checks the header in swtpm's order and returns it with the payload behind it.
fn split_header(blob: &[u8]) -> Result<(Header, &[u8]), BlobError> {
    if blob.len() < HEADER_LEN {
        return Err(BlobError::TooShort(blob.len()));
    }
    let totlen = u32::from_be_bytes([blob[6], blob[7], blob[8], blob[9]]);
    if totlen as usize != blob.len() {
        return Err(BlobError::LengthMismatch {
            header: totlen,
            actual: blob.len(),
        });
    }
    if blob[1] > VERSION {
        return Err(BlobError::TooNew(blob[1]));
    }
    let hdrsize = u16::from_be_bytes([blob[2], blob[3]]);
    if usize::from(hdrsize) != HEADER_LEN {
        return Err(BlobError::HeaderSize(hdrsize));
    }
    let header = Header {
        version: blob[0],
        flags: u16::from_be_bytes([blob[4], blob[5]]),
    };
    Ok((header, &blob[HEADER_LEN..]))
}

/// The value of the first record with `tag`; a record running past the end stops the scan.
fn find_record(mut records: &[u8], tag: u16) -> Option<&[u8]> {
    while records.len() >= 6 {
        let this_tag = u16::from_be_bytes([records[0], records[1]]);
        let len = u32::from_be_bytes([records[2], records[3], records[4], records[5]]) as usize;
        let value = records.get(6..6usize.checked_add(len)?)?;
        if this_tag == tag {
            return Some(value);
        }
        records = &records[6 + len..];
    }
    None
}

fn push_record(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

fn with_header(flags: u16, records: impl FnOnce(&mut Vec<u8>), capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + capacity);
    out.extend_from_slice(&[VERSION, MIN_VERSION, 0, HEADER_LEN as u8]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    records(&mut out);
    let total = out.len() as u32;
    out[6..10].copy_from_slice(&total.to_be_bytes());
    out
}

/// The stored form of a libtpms blob (what a state file holds).
pub fn wrap_stored(state: &[u8]) -> Vec<u8> {
    with_header(0, |out| push_record(out, TAG_DATA, state), 6 + state.len())
}

/// The libtpms blob inside a stored blob.
pub fn unwrap_stored(blob: &[u8]) -> Result<&[u8], BlobError> {
    let (header, payload) = split_header(blob)?;
    match header.version {
        // Written by swtpm before 0.1: the payload is the libtpms blob itself.
        1 => Ok(payload),
        2 => find_record(payload, TAG_DATA).ok_or_else(|| {
            if find_record(payload, TAG_ENCRYPTED_DATA).is_some() {
                BlobError::KeyNotFound
            } else {
                BlobError::MissingRecord("plain data")
            }
        }),
        other => Err(BlobError::UnknownVersion(other)),
    }
}

/// The migration form GET_STATEBLOB returns for a libtpms blob.
pub fn wrap_migration(state: &[u8]) -> Vec<u8> {
    with_header(
        FLAG_MIGRATION_DATA,
        |out| {
            out.extend_from_slice(&TAG_MIGRATION_DATA.to_be_bytes());
            out.extend_from_slice(&(6 + state.len() as u32).to_be_bytes());
            push_record(out, TAG_DATA, state);
        },
        12 + state.len(),
    )
}

/// The libtpms blob inside a SET_STATEBLOB blob. `request_encrypted` is the request's
/// PTM_STATE_FLAG_ENCRYPTED: the sender says the inner blob is state-key encrypted.
pub fn unwrap_migration(blob: &[u8], request_encrypted: bool) -> Result<&[u8], BlobError> {
    let (header, payload) = split_header(blob)?;
    if header.flags & FLAGS_ENCRYPTED != 0 || request_encrypted {
        return Err(BlobError::KeyNotFound);
    }
    let inner = match header.version {
        1 => payload,
        2 => find_record(payload, TAG_MIGRATION_DATA).ok_or_else(|| {
            if find_record(payload, TAG_ENCRYPTED_MIGRATION_DATA).is_some() {
                BlobError::KeyNotFound
            } else {
                BlobError::MissingRecord("migration data")
            }
        })?,
        other => return Err(BlobError::UnknownVersion(other)),
    };
    find_record(inner, TAG_DATA).ok_or(BlobError::MissingRecord("plain data"))
}

/// True when a SET_STATEBLOB payload means "clear this blob" (empty or header only).
pub fn is_empty_blob(blob: &[u8]) -> bool {
    blob.is_empty() || (blob.len() == HEADER_LEN && split_header(blob).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_matches_swtpm_layout() {
        let blob = wrap_stored(&[0xAA; 3]);
        assert_eq!(
            blob,
            [
                2, 1, 0, 10, 0, 0, 0, 0, 0, 19, 0, 1, 0, 0, 0, 3, 0xAA, 0xAA, 0xAA
            ]
        );
        assert_eq!(unwrap_stored(&blob).unwrap(), &[0xAA; 3]);
    }

    #[test]
    fn migration_form_matches_swtpm_layout() {
        let blob = wrap_migration(&[7; 2]);
        assert_eq!(&blob[..10], &[2, 1, 0, 10, 0, 4, 0, 0, 0, 24]);
        assert_eq!(&blob[10..16], &[0, 4, 0, 0, 0, 8]);
        assert_eq!(&blob[16..22], &[0, 1, 0, 0, 0, 2]);
        assert_eq!(unwrap_migration(&blob, false).unwrap(), &[7; 2]);
    }

    #[test]
    fn header_checks_in_swtpm_order() {
        assert_eq!(unwrap_stored(&[2, 1, 0]), Err(BlobError::TooShort(3)));
        let mut blob = wrap_stored(b"x");
        blob[9] += 1;
        assert!(matches!(
            unwrap_stored(&blob),
            Err(BlobError::LengthMismatch { .. })
        ));
        let mut blob = wrap_stored(b"x");
        blob[1] = 3;
        assert_eq!(unwrap_stored(&blob), Err(BlobError::TooNew(3)));
        assert_eq!(BlobError::TooNew(3).result_code(), 0x2E);
        let mut blob = wrap_stored(b"x");
        blob[3] = 11;
        assert_eq!(unwrap_stored(&blob), Err(BlobError::HeaderSize(11)));
        assert_eq!(BlobError::HeaderSize(11).result_code(), 0x2B);
        let mut blob = wrap_stored(b"x");
        blob[0] = 9;
        assert_eq!(unwrap_stored(&blob), Err(BlobError::UnknownVersion(9)));
    }

    #[test]
    fn records_are_found_in_any_order_and_unknown_ones_skipped() {
        let blob = with_header(
            0,
            |out| {
                push_record(out, 99, b"junk");
                push_record(out, TAG_DATA, b"good");
                push_record(out, TAG_DATA, b"second");
            },
            0,
        );
        assert_eq!(unwrap_stored(&blob).unwrap(), b"good");
    }

    #[test]
    fn record_past_the_end_stops_the_scan() {
        let mut blob = wrap_stored(b"abc");
        let len_at = HEADER_LEN + 2;
        blob[len_at..len_at + 4].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(
            unwrap_stored(&blob),
            Err(BlobError::MissingRecord("plain data"))
        );
    }

    #[test]
    fn encrypted_blobs_need_a_key() {
        let mut blob = wrap_migration(b"s");
        blob[5] |= 0x02;
        assert_eq!(unwrap_migration(&blob, false), Err(BlobError::KeyNotFound));
        assert_eq!(
            unwrap_migration(&wrap_migration(b"s"), true),
            Err(BlobError::KeyNotFound)
        );
        assert_eq!(BlobError::KeyNotFound.result_code(), 0x0D);
    }

    #[test]
    fn stored_form_is_not_a_migration_blob() {
        assert_eq!(
            unwrap_migration(&wrap_stored(b"s"), false),
            Err(BlobError::MissingRecord("migration data"))
        );
    }

    #[test]
    fn empty_blobs() {
        assert!(is_empty_blob(&[]));
        assert!(is_empty_blob(&[2, 1, 0, 10, 0, 4, 0, 0, 0, 10]));
        assert!(!is_empty_blob(&wrap_migration(b"x")));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = unwrap_stored(&bytes);
            let _ = unwrap_migration(&bytes, false);
            let _ = is_empty_blob(&bytes);
        }
    }
}
