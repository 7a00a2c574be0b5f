//! State blobs from files and from SET_STATEBLOB, without keys and with 128- and 256-bit
//! state and migration keys (a wrong key sends every input down the HMAC path; the
//! first input bytes choose which keys apply).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtpm::state::blob::{is_empty_blob, unwrap_migration, unwrap_stored};
use vtpm::state::key::AesKey;

fuzz_target!(|data: &[u8]| {
    let key128 = AesKey::from_bytes(&[0x11; 16]);
    let key256 = AesKey::from_bytes(&[0x22; 32]);
    let keys = [None, key128.as_ref(), key256.as_ref()];
    let choice = data.first().copied().unwrap_or(0) as usize;
    let state_key = keys[choice % 3];
    let migration_key = keys[(choice / 3) % 3];
    let _ = unwrap_stored(data, state_key);
    let _ = unwrap_migration(data, false, state_key, migration_key);
    let _ = unwrap_migration(data, true, state_key, migration_key);
    let _ = is_empty_blob(data);
});
