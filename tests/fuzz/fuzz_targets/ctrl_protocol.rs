//! Control requests as they arrive on the socket: code, body, and the wait logic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtpm::ctrl::protocol::{Command, decode, info_response, wanted_len};

fuzz_target!(|data: &[u8]| {
    let wanted = wanted_len(data);
    assert!(wanted >= 4);
    if let Some(code) = data.get(..4) {
        let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
        if let Some(cmd) = Command::from_code(code) {
            let _ = decode(cmd, &data[4..]);
        }
    }
    if let Some((offset, text)) = data.split_first_chunk::<4>() {
        let _ = info_response(text, u32::from_be_bytes(*offset));
    }
});
