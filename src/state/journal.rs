//! A redo record that makes changes to a linear container atomic (`super::file`).
//!
//! swtpm's container is rewritten in place: a crash or power loss in the middle of a
//! change (a blob written, sections moved, the header not yet updated) would leave a
//! container that cannot be loaded. So before a change touches the container, all the
//! bytes it will write go into one record after the container's end, which is flushed;
//! then the change is made and flushed, and the record is cut off again. Whoever opens
//! the container next and finds a complete record there (its checksum matches) writes
//! it again: the change then happened completely. swtpm ignores bytes after the last
//! section, so the container stays interchangeable.
//!
//! Layout (little-endian like the container): `count u32`, `final_len u64`, then
//! `count` × (`offset u64`, `len u32`, bytes), then SHA-256 of all that, then
//! `record_len u64` and the magic `vtpmredo`, so that it is found from the end. Pure.

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"vtpmredo";
/// The record's last bytes: its length and the magic.
pub const TRAILER_LEN: usize = 8 + 8;
const DIGEST_LEN: usize = 32;
const FIXED_LEN: usize = 4 + 8 + DIGEST_LEN + TRAILER_LEN;

/// Bytes to write at an offset of the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub at: u64,
    pub bytes: Vec<u8>,
}

/// One change of the container: its writes, in order, and its length afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub writes: Vec<Write>,
    pub final_len: u64,
}

impl Change {
    /// The first byte after everything the change writes.
    pub fn end(&self) -> u64 {
        self.writes
            .iter()
            .map(|w| w.at + w.bytes.len() as u64)
            .max()
            .unwrap_or(0)
    }

    /// The record of this change.
    pub fn encode(&self) -> Vec<u8> {
        let payload: usize = self.writes.iter().map(|w| 12 + w.bytes.len()).sum();
        let mut out = Vec::with_capacity(FIXED_LEN + payload);
        out.extend_from_slice(&(self.writes.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.final_len.to_le_bytes());
        for write in &self.writes {
            out.extend_from_slice(&write.at.to_le_bytes());
            out.extend_from_slice(&(write.bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&write.bytes);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        let record_len = (out.len() + TRAILER_LEN) as u64;
        out.extend_from_slice(&record_len.to_le_bytes());
        out.extend_from_slice(MAGIC);
        out
    }
}

/// The record length announced by the last 16 bytes of a container, if they end with
/// the magic: the caller then reads that many bytes from the end and decodes them.
pub fn record_len(trailer: &[u8]) -> Option<u64> {
    let trailer = trailer.get(trailer.len().checked_sub(TRAILER_LEN)?..)?;
    if &trailer[8..] != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(trailer[..8].try_into().ok()?);
    (len >= FIXED_LEN as u64).then_some(len)
}

/// The change recorded in `record` (exactly the bytes `record_len` announced), which
/// was found at offset `record_at`; `None` unless it is complete and every write lies
/// before the record.
pub fn decode(record: &[u8], record_at: u64) -> Option<Change> {
    let body_len = record.len().checked_sub(DIGEST_LEN + TRAILER_LEN)?;
    let (body, rest) = record.split_at(body_len);
    if Sha256::digest(body).as_slice() != &rest[..DIGEST_LEN] {
        return None;
    }
    let count = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    let final_len = u64::from_le_bytes(body.get(4..12)?.try_into().ok()?);
    let mut at = 12;
    let mut writes = Vec::new();
    for _ in 0..count {
        let offset = u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_le_bytes(body.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let bytes = body.get(at + 12..at + 12 + len)?.to_vec();
        if offset.checked_add(len as u64)? > record_at {
            return None;
        }
        writes.push(Write { at: offset, bytes });
        at += 12 + len;
    }
    (at == body.len()).then_some(Change { writes, final_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> Change {
        Change {
            writes: vec![
                Write {
                    at: 192,
                    bytes: vec![1; 300],
                },
                Write {
                    at: 0,
                    bytes: vec![2; 192],
                },
            ],
            final_len: 1024,
        }
    }

    #[test]
    fn a_record_is_found_from_the_end_and_decoded() {
        let record = change().encode();
        let mut container = vec![0u8; 1024];
        container.extend_from_slice(&record);
        let len = record_len(&container).unwrap() as usize;
        assert_eq!(len, record.len());
        let at = container.len() - len;
        assert_eq!(decode(&container[at..], at as u64), Some(change()));
        assert_eq!(change().end(), 492);
    }

    #[test]
    fn incomplete_or_foreign_records_are_ignored() {
        let record = change().encode();
        assert_eq!(record_len(&[0u8; 100]), None);
        let mut torn = record.clone();
        torn[20] ^= 1;
        assert_eq!(decode(&torn, 4096), None, "checksum");
        assert_eq!(decode(&record, 400), None, "a write past the record");
        assert_eq!(decode(&record[10..], 4096), None);
        assert_eq!(decode(&[], 0), None);
    }
}
