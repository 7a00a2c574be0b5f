//! The container of swtpm's linear file backend (`--tpmstate backend-uri=file://`,
//! state-format.md §6): a 192-byte little-endian header with a table of 15 slots, then
//! one section per stored blob. Pure: bytes in, a [`Header`] or a [`Plan`] out; the
//! file I/O that carries a plan out lives in `super::file`.
//!
//! Allocation follows swtpm byte for byte, so that containers move between vtpm and
//! swtpm in both directions and end up laid out the same: a new blob goes after the last
//! section, in a section of its size rounded up to a power of two; a blob that no longer
//! fits its section is removed (the sections after it move forward) and appended anew;
//! a regular file ends exactly where its last section ends after every relocation.

use std::ops::Range;

/// "swtpmlin", stored little-endian (the bytes on disk read "nilmptws").
pub const MAGIC: u64 = 0x7377_7470_6D6C_696E;
/// The only container version there is.
pub const VERSION: u8 = 1;
/// Size of the header this codec writes, and the smallest it accepts.
pub const HEADER_LEN: usize = 192;
pub const SLOT_COUNT: usize = 15;
/// Where the slot table starts, whatever the header's size field says.
const SLOT_TABLE_AT: usize = 12;
const SLOT_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinearError {
    #[error("it is {0} bytes long, shorter than the {HEADER_LEN}-byte container header")]
    TooShort(u64),
    #[error("it has container format version {0}, which this vtpm does not know")]
    UnknownVersion(u8),
    #[error("its header size field is {0}, smaller than the {HEADER_LEN}-byte header")]
    HeaderSize(u16),
    #[error("its slot {slot} points outside the container or into another slot")]
    BadSlot { slot: usize },
    #[error("it needs {needed} bytes for the new state, but the device has only {available}")]
    NoRoom { needed: u64, available: u64 },
    #[error("a state of {0} bytes does not fit a container slot")]
    TooLarge(usize),
}

/// One slot of the table: where a blob's section is and how much of it is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// 0: the slot is empty.
    pub offset: u32,
    pub data_len: u32,
    pub section_len: u32,
}

impl Slot {
    pub fn is_present(&self) -> bool {
        self.offset != 0
    }

    fn section(&self) -> Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.section_len)
    }

    /// Where the blob's bytes are.
    pub fn data(&self) -> Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.data_len)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The first byte sections may use (swtpm keeps whatever an existing header says).
    pub header_len: u16,
    pub slots: [Slot; SLOT_COUNT],
}

impl Default for Header {
    fn default() -> Header {
        Header {
            header_len: HEADER_LEN as u16,
            slots: [Slot::default(); SLOT_COUNT],
        }
    }
}

impl Header {
    /// Reads the header at the start of a container of `container_len` bytes. `Ok(None)`:
    /// the magic is not there, i.e. the file is not (yet) a container.
    pub fn parse(bytes: &[u8], container_len: u64) -> Result<Option<Header>, LinearError> {
        let Some(bytes) = bytes.get(..HEADER_LEN) else {
            return Err(LinearError::TooShort(bytes.len() as u64));
        };
        if u64_le(&bytes[0..8]) != MAGIC {
            return Ok(None);
        }
        if bytes[8] > VERSION {
            return Err(LinearError::UnknownVersion(bytes[8]));
        }
        let header_len = u16_le(&bytes[10..12]);
        if usize::from(header_len) < HEADER_LEN {
            return Err(LinearError::HeaderSize(header_len));
        }
        let mut slots = [Slot::default(); SLOT_COUNT];
        for (n, slot) in slots.iter_mut().enumerate() {
            let at = SLOT_TABLE_AT + n * SLOT_LEN;
            *slot = Slot {
                offset: u32_le(&bytes[at..at + 4]),
                data_len: u32_le(&bytes[at + 4..at + 8]),
                section_len: u32_le(&bytes[at + 8..at + 12]),
            };
        }
        let header = Header { header_len, slots };
        header.check(container_len)?;
        Ok(Some(header))
    }

    /// Every present slot lies after the header, inside the container, holds its data,
    /// and overlaps no other: then no plan can read or write outside its own sections.
    fn check(&self, container_len: u64) -> Result<(), LinearError> {
        let present = || {
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_present())
        };
        for (n, slot) in present() {
            let section = slot.section();
            let fits = section.start >= u64::from(self.header_len)
                && section.end <= container_len
                && slot.data_len <= slot.section_len
                && slot.section_len > 0;
            let overlaps = present().any(|(m, other)| {
                m != n && other.section().start < section.end && section.start < other.section().end
            });
            if !fits || overlaps {
                return Err(LinearError::BadSlot { slot: n });
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        out[8] = VERSION;
        out[10..12].copy_from_slice(&self.header_len.to_le_bytes());
        for (n, slot) in self.slots.iter().enumerate() {
            let at = SLOT_TABLE_AT + n * SLOT_LEN;
            out[at..at + 4].copy_from_slice(&slot.offset.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&slot.data_len.to_le_bytes());
            out[at + 8..at + 12].copy_from_slice(&slot.section_len.to_le_bytes());
        }
        out
    }

    /// The first byte after the last section (the header's end when there is none).
    pub fn sections_end(&self) -> u64 {
        self.slots
            .iter()
            .filter(|slot| slot.is_present())
            .map(|slot| slot.section().end)
            .max()
            .unwrap_or(u64::from(self.header_len))
    }

    /// Removes slot `n` and moves the sections after it forward over its section.
    fn remove(&mut self, n: usize) -> Option<Move> {
        let removed = self.slots[n];
        self.slots[n] = Slot::default();
        let freed = removed.section();
        let end = self.sections_end();
        for slot in self.slots.iter_mut().filter(|s| s.offset > removed.offset) {
            slot.offset -= removed.section_len;
        }
        (end > freed.end).then_some(Move {
            from: freed.end..end,
            to: freed.start,
        })
    }
}

/// How the container may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Medium {
    /// A regular file: grown and shrunk as sections come and go.
    File,
    /// A block device of this many bytes: never resized.
    Device(u64),
}

/// Bytes to move within the container, before anything else is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub from: Range<u64>,
    pub to: u64,
}

/// What a change does to the container, in order: move sections, write the blob at
/// `data_at`, write the new header, set the new length (regular files only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub header: Header,
    pub moved: Option<Move>,
    /// Where the new blob's bytes go (none for a removal).
    pub data_at: Option<u64>,
    /// The container's new length, when it changes.
    pub new_len: Option<u64>,
}

/// Stores `data_len` bytes in slot `n` of a container of `container_len` bytes.
pub fn plan_store(
    header: &Header,
    n: usize,
    data_len: usize,
    container_len: u64,
    medium: Medium,
) -> Result<Plan, LinearError> {
    let len32 = u32::try_from(data_len).map_err(|_| LinearError::TooLarge(data_len))?;
    let mut header = header.clone();
    let current = header.slots[n];
    if current.is_present() && len32 <= current.section_len {
        header.slots[n].data_len = len32;
        return Ok(Plan {
            header,
            moved: None,
            data_at: Some(u64::from(current.offset)),
            new_len: None,
        });
    }
    let section_len = len32
        .checked_next_power_of_two()
        .ok_or(LinearError::TooLarge(data_len))?;
    let moved = if current.is_present() {
        header.remove(n)
    } else {
        None
    };
    let offset = header.sections_end();
    let end = offset + u64::from(section_len);
    let offset32 = u32::try_from(offset).map_err(|_| LinearError::TooLarge(data_len))?;
    u32::try_from(end).map_err(|_| LinearError::TooLarge(data_len))?;
    let new_len = match medium {
        Medium::File => Some(end),
        Medium::Device(size) if end > size => {
            return Err(LinearError::NoRoom {
                needed: end,
                available: size,
            });
        }
        Medium::Device(_) => None,
    };
    header.slots[n] = Slot {
        offset: offset32,
        data_len: len32,
        section_len,
    };
    Ok(Plan {
        header,
        moved,
        data_at: Some(offset),
        new_len: new_len.filter(|len| *len != container_len),
    })
}

/// Removes slot `n` from a container of `container_len` bytes; `None` if it is empty.
pub fn plan_delete(header: &Header, n: usize, container_len: u64, medium: Medium) -> Option<Plan> {
    let removed = header.slots[n];
    if !removed.is_present() {
        return None;
    }
    let mut header = header.clone();
    let moved = header.remove(n);
    let new_len = match medium {
        // swtpm shrinks by the freed section; never below what is still in use.
        Medium::File => Some(
            container_len
                .saturating_sub(u64::from(removed.section_len))
                .max(header.sections_end()),
        ),
        Medium::Device(_) => None,
    };
    Some(Plan {
        header,
        moved,
        data_at: None,
        new_len: new_len.filter(|len| *len != container_len),
    })
}

fn u16_le(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn u32_le(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn u64_le(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERMALL: usize = 0;
    const VOLATILE: usize = 1;

    /// Carries a plan out on an in-memory container, as the file backend does on disk.
    fn apply(image: &mut Vec<u8>, plan: &Plan, data: &[u8]) {
        if let Some(moved) = &plan.moved {
            let from = moved.from.start as usize..moved.from.end as usize;
            image.copy_within(from, moved.to as usize);
        }
        if let Some(len) = plan.new_len {
            image.resize(len as usize, 0);
        }
        if let Some(at) = plan.data_at {
            image[at as usize..at as usize + data.len()].copy_from_slice(data);
        }
        image[..HEADER_LEN].copy_from_slice(&plan.header.encode());
    }

    fn store(image: &mut Vec<u8>, n: usize, data: &[u8]) {
        let header = Header::parse(image, image.len() as u64).unwrap().unwrap();
        let plan = plan_store(&header, n, data.len(), image.len() as u64, Medium::File).unwrap();
        apply(image, &plan, data);
    }

    fn delete(image: &mut Vec<u8>, n: usize) {
        let header = Header::parse(image, image.len() as u64).unwrap().unwrap();
        let plan = plan_delete(&header, n, image.len() as u64, Medium::File).unwrap();
        apply(image, &plan, &[]);
    }

    fn slot(image: &[u8], n: usize) -> (u32, u32, u32) {
        let s = Header::parse(image, image.len() as u64)
            .unwrap()
            .unwrap()
            .slots[n];
        (s.offset, s.data_len, s.section_len)
    }

    fn data(image: &[u8], n: usize) -> &[u8] {
        let s = Header::parse(image, image.len() as u64)
            .unwrap()
            .unwrap()
            .slots[n];
        &image[s.data().start as usize..s.data().end as usize]
    }

    fn new_container() -> Vec<u8> {
        Header::default().encode().to_vec()
    }

    #[test]
    fn magic_is_swtpmlin_reversed_on_disk() {
        let image = new_container();
        assert_eq!(&image[..8], b"nilmptws");
        assert_eq!(image[8], 1);
        assert_eq!(&image[10..12], &[0xC0, 0x00]);
        assert_eq!(Header::parse(&[0u8; 192], 192), Ok(None));
    }

    /// The layouts swtpm 0.7.1 produced (state-format.md §6.1, §6.2).
    #[test]
    fn allocation_matches_swtpm() {
        let mut image = new_container();
        store(&mut image, PERMALL, &[1; 1370]);
        store(&mut image, VOLATILE, &[2; 8986]);
        assert_eq!(slot(&image, PERMALL), (192, 1370, 2048));
        assert_eq!(slot(&image, VOLATILE), (2240, 8986, 16384));
        assert_eq!(image.len(), 18624);

        // In place while it fits.
        store(&mut image, PERMALL, &[3; 2000]);
        assert_eq!(slot(&image, PERMALL), (192, 2000, 2048));
        assert_eq!(image.len(), 18624);

        // Growing past its section: volatile moves forward, permall goes to the end.
        store(&mut image, PERMALL, &[4; 2100]);
        assert_eq!(slot(&image, VOLATILE), (192, 8986, 16384));
        assert_eq!(slot(&image, PERMALL), (16576, 2100, 4096));
        assert_eq!(image.len(), 20672);
        assert_eq!(data(&image, VOLATILE), &[2; 8986][..]);
        assert_eq!(data(&image, PERMALL), &[4; 2100][..]);

        // Deleting shrinks by the freed section.
        delete(&mut image, VOLATILE);
        assert_eq!(slot(&image, PERMALL), (192, 2100, 4096));
        assert_eq!(image.len(), 4288);
        assert_eq!(data(&image, PERMALL), &[4; 2100][..]);
        assert!(
            plan_delete(
                &Header::parse(&image, 4288).unwrap().unwrap(),
                VOLATILE,
                4288,
                Medium::File
            )
            .is_none()
        );
    }

    #[test]
    fn a_larger_header_is_kept() {
        let header = Header {
            header_len: 256,
            ..Header::default()
        };
        let mut image = header.encode().to_vec();
        image.resize(256, 0);
        store(&mut image, PERMALL, b"abc");
        assert_eq!(slot(&image, PERMALL), (256, 3, 4));
        assert_eq!(&image[10..12], &[0, 1]);
    }

    #[test]
    fn block_devices_are_never_resized() {
        let header = Header::default();
        let plan = plan_store(&header, PERMALL, 1000, 4096, Medium::Device(4096)).unwrap();
        assert_eq!(plan.new_len, None);
        assert_eq!(
            plan_store(&header, PERMALL, 5000, 4096, Medium::Device(4096)),
            Err(LinearError::NoRoom {
                needed: 192 + 8192,
                available: 4096
            })
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut image = new_container();
        image[8] = 2;
        assert_eq!(
            Header::parse(&image, 192),
            Err(LinearError::UnknownVersion(2))
        );
        let mut image = new_container();
        image[10] = 100;
        assert_eq!(
            Header::parse(&image, 192),
            Err(LinearError::HeaderSize(100))
        );
        assert_eq!(
            Header::parse(&image[..100], 192),
            Err(LinearError::TooShort(100))
        );

        let mut header = Header::default();
        header.slots[0] = Slot {
            offset: 192,
            data_len: 10,
            section_len: 16,
        };
        let image = header.encode();
        assert_eq!(
            Header::parse(&image, 200),
            Err(LinearError::BadSlot { slot: 0 })
        );
        header.slots[1] = Slot {
            offset: 200,
            data_len: 1,
            section_len: 16,
        };
        let image = header.encode();
        assert!(Header::parse(&image, 4096).is_err(), "overlapping slots");
        header.slots[1] = Slot {
            offset: 100,
            data_len: 1,
            section_len: 16,
        };
        assert!(
            Header::parse(&header.encode(), 4096).is_err(),
            "slot in the header"
        );
    }

    #[test]
    fn relocation_moves_the_sections_after_the_old_one() {
        let mut image = new_container();
        store(&mut image, PERMALL, &[1; 100]);
        store(&mut image, VOLATILE, &[2; 100]);
        let header = Header::parse(&image, image.len() as u64).unwrap().unwrap();
        let plan = plan_store(&header, PERMALL, 300, image.len() as u64, Medium::File).unwrap();
        let moved = plan.moved.clone().unwrap();
        assert_eq!((moved.from, moved.to), (320..448, 192));
        assert_eq!((plan.data_at, plan.new_len), (Some(320), Some(320 + 512)));
    }
}
