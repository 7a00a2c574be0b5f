//! State blobs from files and from SET_STATEBLOB.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtpm::state::blob::{is_empty_blob, unwrap_migration, unwrap_stored};

fuzz_target!(|data: &[u8]| {
    let _ = unwrap_stored(data);
    let _ = unwrap_migration(data, false);
    let _ = unwrap_migration(data, true);
    let _ = is_empty_blob(data);
});
