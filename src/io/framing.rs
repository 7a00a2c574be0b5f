//! Finding TPM commands in the data channel's byte stream. Pure.
//!
//! swtpm treats whatever one `read` returned as one command. vtpm reassembles commands
//! by the size field of their header instead, whatever the read boundaries, and bounds
//! the wait: a command that stays incomplete is handed over as it is once the sender
//! falls silent, so libtpms answers it with an error rather than leaving the channel
//! stuck.
//!
//! A TPM 2 command may be preceded by the 9-byte TCG "send command" prefix
//! (`u32 8`, `u8 locality`, `u32 size`), whose response is wrapped in turn.

use crate::tpm::HEADER_LEN;

/// The largest command libtpms accepts.
pub const MAX_COMMAND: usize = 4096;
pub const PREFIX_LEN: usize = 9;
/// `TPM_SEND_COMMAND` of the TCG simulator protocol.
const SEND_COMMAND: u32 = 8;

/// One command found at the front of the buffer: its bytes are `buf[start..end]`, and the
/// frame takes up `buf[..end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
    /// The locality byte of the TCG prefix, if the command had one.
    pub prefix_locality: Option<u8>,
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Where the command itself starts, and the prefix's locality if there is one. swtpm
/// looks for the prefix only in packets of at least 10 bytes, and only for TPM 2.
fn command_start(buf: &[u8], tpm2: bool) -> (usize, Option<u8>) {
    if tpm2 && buf.len() >= HEADER_LEN && be32(buf, 0) == SEND_COMMAND {
        (PREFIX_LEN, Some(buf[4]))
    } else {
        (0, None)
    }
}

/// The first complete command in `buf`, or `None` while more bytes are needed.
/// A header whose size is impossible is not waited on: everything buffered is taken.
pub fn complete_frame(buf: &[u8], tpm2: bool) -> Option<Frame> {
    let (start, prefix_locality) = command_start(buf, tpm2);
    if buf.len() < start + HEADER_LEN {
        return None;
    }
    let size = be32(buf, start + 2) as usize;
    let end = if (HEADER_LEN..=MAX_COMMAND).contains(&size) {
        start + size
    } else {
        buf.len().min(start + MAX_COMMAND)
    };
    (buf.len() >= end).then_some(Frame {
        start,
        end,
        prefix_locality,
    })
}

/// The frame to hand over when the sender fell silent in the middle of a command:
/// everything buffered (`buf` is not empty).
pub fn incomplete_frame(buf: &[u8], tpm2: bool) -> Frame {
    let (start, prefix_locality) = command_start(buf, tpm2);
    Frame {
        start,
        end: buf.len().min(start + MAX_COMMAND),
        prefix_locality,
    }
}

/// Wraps a response to a prefixed command: `u32 length`, the response, `u32 0`.
/// `out` holds 4 reserved bytes followed by the response.
pub fn wrap_prefixed_response(out: &mut Vec<u8>) {
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET_RANDOM: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x7b, 0, 8];

    #[test]
    fn whole_command_in_one_piece() {
        assert_eq!(
            complete_frame(&GET_RANDOM, true),
            Some(Frame {
                start: 0,
                end: 12,
                prefix_locality: None
            })
        );
    }

    #[test]
    fn split_command_waits_for_the_rest() {
        for cut in 0..GET_RANDOM.len() {
            assert_eq!(
                complete_frame(&GET_RANDOM[..cut], true),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn pipelined_commands_are_taken_one_by_one() {
        let two = [GET_RANDOM, GET_RANDOM].concat();
        let first = complete_frame(&two, true).unwrap();
        assert_eq!(first.end, 12);
        assert_eq!(complete_frame(&two[first.end..], true).unwrap().end, 12);
    }

    #[test]
    fn tcg_prefix_is_recognised_for_tpm2_only() {
        let mut prefixed = vec![0, 0, 0, 8, 2, 0, 0, 0, 99];
        prefixed.extend_from_slice(&GET_RANDOM);
        assert_eq!(
            complete_frame(&prefixed, true),
            Some(Frame {
                start: 9,
                end: 21,
                prefix_locality: Some(2)
            })
        );
        // TPM 1.2 reads it as a raw header with an impossible size.
        let raw = complete_frame(&prefixed, false).unwrap();
        assert_eq!((raw.start, raw.prefix_locality), (0, None));
    }

    #[test]
    fn prefix_with_a_short_command_is_handed_over_when_silent() {
        let prefixed = [0, 0, 0, 8, 0, 0, 0, 0, 1, 0x80];
        assert_eq!(complete_frame(&prefixed, true), None);
        assert_eq!(
            incomplete_frame(&prefixed, true),
            Frame {
                start: 9,
                end: 10,
                prefix_locality: Some(0)
            }
        );
    }

    #[test]
    fn impossible_sizes_are_not_waited_for() {
        let mut huge = GET_RANDOM;
        huge[2] = 0x7f;
        assert_eq!(complete_frame(&huge, true).unwrap().end, 12);
        let mut tiny = GET_RANDOM;
        tiny[5] = 3;
        assert_eq!(complete_frame(&tiny, true).unwrap().end, 12);
    }

    #[test]
    fn frames_never_exceed_the_command_limit() {
        let junk = vec![0xffu8; 3 * MAX_COMMAND];
        assert_eq!(complete_frame(&junk, true).unwrap().end, MAX_COMMAND);
        assert_eq!(incomplete_frame(&junk, true).end, MAX_COMMAND);
    }

    #[test]
    fn prefixed_response_wrapping() {
        let mut out = vec![0, 0, 0, 0, 0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0];
        wrap_prefixed_response(&mut out);
        assert_eq!(&out[..4], &[0, 0, 0, 10]);
        assert_eq!(&out[14..], &[0, 0, 0, 0]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 24) as u8
                })
                .collect();
            for tpm2 in [false, true] {
                if let Some(frame) = complete_frame(&bytes, tpm2) {
                    assert!(frame.start <= frame.end && frame.end <= bytes.len());
                }
                if !bytes.is_empty() {
                    let frame = incomplete_frame(&bytes, tpm2);
                    assert!(frame.start <= frame.end && frame.end <= bytes.len());
                }
            }
        }
    }
}
