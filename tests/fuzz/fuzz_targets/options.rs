//! The daemon's command line: argv words and every key=value option parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtpm::cli::{args, options};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = options::parse_log(text);
    let _ = options::parse_ctrl(text);
    let _ = options::parse_server(text, Some(text));
    let _ = options::parse_tpmstate(text);
    let _ = options::parse_pid(text);
    let _ = options::parse_locality(text);
    let _ = options::parse_flags(text);
    let _ = options::parse_key(text);
    // Words separated by NUL, as argv; `-f/--fd` values would touch real descriptors,
    // so keep them out.
    let mut argv: Vec<&str> = vec!["swtpm"];
    argv.extend(text.split('\0').filter(|word| !word.starts_with("-f") && !word.starts_with("--f")));
    let _ = args::parse(&argv);
});
