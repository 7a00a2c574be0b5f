//! swtpm's blob container (state-format.md §3.1–§3.2): a 10-byte header — version,
//! minimum version, header size, flags, total length, all big-endian — followed by
//! tag-length-value records. Pure codec.

pub const HEADER_LEN: usize = 10;
const VERSION: u8 = 2;
const MIN_VERSION: u8 = 1;
/// A record's tag (u16) and length (u32) before its value.
const RECORD_HEADER_LEN: usize = 6;

/// Why a header was refused, in the order swtpm checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("it has {0} bytes, fewer than the 10-byte header")]
    TooShort(usize),
    #[error("its header says {header} bytes but it has {actual}")]
    LengthMismatch { header: u32, actual: usize },
    #[error("it needs header version {0}, newer than this build understands")]
    TooNew(u8),
    #[error("its header size is {0}, not 10")]
    HeaderSize(u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload layout: 1 = legacy raw data, 2 = TLV records.
    pub version: u8,
    pub flags: u16,
}

/// Checks the header in swtpm's order and returns it with the payload behind it.
pub fn split_header(blob: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
    let Some((header, payload)) = blob.split_first_chunk::<HEADER_LEN>() else {
        return Err(HeaderError::TooShort(blob.len()));
    };
    let [
        version,
        min_version,
        size_hi,
        size_lo,
        flags_hi,
        flags_lo,
        total @ ..,
    ] = *header;
    let total = u32::from_be_bytes(total);
    if total as usize != blob.len() {
        return Err(HeaderError::LengthMismatch {
            header: total,
            actual: blob.len(),
        });
    }
    if min_version > VERSION {
        return Err(HeaderError::TooNew(min_version));
    }
    let header_size = u16::from_be_bytes([size_hi, size_lo]);
    if usize::from(header_size) != HEADER_LEN {
        return Err(HeaderError::HeaderSize(header_size));
    }
    let header = Header {
        version,
        flags: u16::from_be_bytes([flags_hi, flags_lo]),
    };
    Ok((header, payload))
}

/// The value of the first record with `tag`; a record running past the end stops the scan.
pub fn find_record(mut records: &[u8], tag: u16) -> Option<&[u8]> {
    while let Some((record_header, rest)) = records.split_first_chunk::<RECORD_HEADER_LEN>() {
        let [tag_hi, tag_lo, len @ ..] = *record_header;
        let len = u32::from_be_bytes(len) as usize;
        let value = rest.get(..len)?;
        if u16::from_be_bytes([tag_hi, tag_lo]) == tag {
            return Some(value);
        }
        records = &rest[len..];
    }
    None
}

pub fn push_record(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// The bytes a record of `value_len` bytes takes.
pub fn record_len(value_len: usize) -> usize {
    RECORD_HEADER_LEN + value_len
}

/// A version-2 blob: header with `flags`, then the records `records` bytes hold.
pub fn with_header(flags: u16, records: &[u8]) -> Vec<u8> {
    let total = (HEADER_LEN + records.len()) as u32;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&[VERSION, MIN_VERSION, 0, HEADER_LEN as u8]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(records);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_with(flags: u16, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, value) in records {
            push_record(&mut out, *tag, value);
        }
        with_header(flags, &out)
    }

    #[test]
    fn header_layout() {
        let blob = blob_with(0x0102, &[(1, &[0xAA; 3])]);
        assert_eq!(
            blob,
            [
                2, 1, 0, 10, 1, 2, 0, 0, 0, 19, 0, 1, 0, 0, 0, 3, 0xAA, 0xAA, 0xAA
            ]
        );
        let (header, payload) = split_header(&blob).unwrap();
        assert_eq!(
            header,
            Header {
                version: 2,
                flags: 0x0102
            }
        );
        assert_eq!(find_record(payload, 1), Some(&[0xAA; 3][..]));
        assert_eq!(record_len(3), 9);
    }

    #[test]
    fn header_checks_in_swtpm_order() {
        assert_eq!(split_header(&[2, 1, 0]), Err(HeaderError::TooShort(3)));
        let good = blob_with(0, &[(1, b"x")]);
        let mut blob = good.clone();
        blob[9] += 1;
        // Every later field is wrong too, but the length is checked first.
        blob[1] = 3;
        blob[3] = 11;
        assert!(matches!(
            split_header(&blob),
            Err(HeaderError::LengthMismatch { .. })
        ));
        let mut blob = good.clone();
        blob[1] = 3;
        blob[3] = 11;
        assert_eq!(split_header(&blob), Err(HeaderError::TooNew(3)));
        let mut blob = good.clone();
        blob[3] = 11;
        assert_eq!(split_header(&blob), Err(HeaderError::HeaderSize(11)));
        let mut blob = good;
        blob[0] = 9;
        assert_eq!(split_header(&blob).unwrap().0.version, 9);
    }

    #[test]
    fn records_are_found_in_any_order_and_unknown_ones_skipped() {
        let blob = blob_with(0, &[(99, b"junk"), (1, b"good"), (1, b"second")]);
        let payload = split_header(&blob).unwrap().1;
        assert_eq!(find_record(payload, 1), Some(&b"good"[..]));
        assert_eq!(find_record(payload, 2), None);
    }

    #[test]
    fn record_past_the_end_stops_the_scan() {
        let mut records = Vec::new();
        push_record(&mut records, 7, b"abc");
        push_record(&mut records, 1, b"late");
        records[2..6].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(find_record(&records, 1), None);
        assert_eq!(find_record(&records, 7), None);
        assert_eq!(find_record(&records[..5], 7), None);
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
            let _ = split_header(&bytes);
            for tag in 0..8 {
                let _ = find_record(&bytes, tag);
            }
        }
    }
}
