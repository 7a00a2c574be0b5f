//! TPM commands cut out of the data channel's byte stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtpm::io::framing::{MAX_COMMAND, PREFIX_LEN, complete_frame, incomplete_frame};

fuzz_target!(|data: &[u8]| {
    for tpm2 in [false, true] {
        let mut rest = data;
        while !rest.is_empty() {
            let frame = complete_frame(rest, tpm2).unwrap_or_else(|| incomplete_frame(rest, tpm2));
            assert!(frame.start <= frame.end && frame.end <= rest.len());
            assert!(frame.end - frame.start <= MAX_COMMAND && frame.start <= PREFIX_LEN);
            if frame.end == 0 {
                break;
            }
            rest = &rest[frame.end..];
        }
    }
});
