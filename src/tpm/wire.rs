//! Building and reading TPM packets: big-endian fields, sized buffers, the 10-byte
//! command header. Pure; readers return `None` past the end instead of panicking.

use super::HEADER_LEN;

/// A command: `tag`, its total size, `code`, then `parameters` (handles, sessions and
/// parameters, already encoded).
pub fn command(tag: u16, code: u32, parameters: &[u8]) -> Vec<u8> {
    let size = HEADER_LEN + parameters.len();
    let mut out = Vec::with_capacity(size);
    put_u16(&mut out, tag);
    put_u32(&mut out, size as u32);
    put_u32(&mut out, code);
    out.extend_from_slice(parameters);
    out
}

pub fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// A TPM2B: a u16 size, then the bytes.
pub fn put_sized(out: &mut Vec<u8>, data: &[u8]) {
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

/// A cursor over big-endian fields that returns `None` past the end.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_header_counts_itself() {
        assert_eq!(
            command(0x8001, 0x144, &[0, 0]),
            [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0]
        );
    }

    #[test]
    fn reader_stops_at_the_end() {
        let mut reader = Reader::new(&[0, 1, 0, 0, 0, 2, 9]);
        assert_eq!(reader.u16(), Some(1));
        assert_eq!(reader.u32(), Some(2));
        assert_eq!(reader.u16(), None);
        assert_eq!(reader.u8(), Some(9));
        assert_eq!(reader.take(1), None);
    }
}
