//! `swtpm`: vtpm's drop-in for swtpm's daemon (`swtpm socket|chardev [options]`).

use std::process::ExitCode;

use vtpm::cli::{CliError, Invocation, args};
use vtpm::daemon;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let status = match args::parse(&argv) {
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            0
        }
        Ok(Invocation::Version) => {
            println!(
                "TPM emulator version {} (vtpm, swtpm-compatible), Copyright (c) 2026 the vtpm developers",
                daemon::VERSION
            );
            0
        }
        Ok(Invocation::Run(frontend)) => daemon::run(frontend),
        Err(CliError::Usage { message, usage }) => {
            eprintln!("{message}");
            eprint!("{usage}");
            1
        }
        Err(err) => {
            eprintln!("swtpm: {err}");
            1
        }
    };
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
