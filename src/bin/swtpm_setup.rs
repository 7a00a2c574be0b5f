//! `swtpm_setup`: vtpm's drop-in for swtpm's TPM manufacturing tool.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ExitCode::from(u8::try_from(vtpm::setup::main(&args)).unwrap_or(1))
}
