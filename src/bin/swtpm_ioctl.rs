//! `swtpm_ioctl`: vtpm's drop-in for swtpm's control tool — one control command to a
//! running emulator over its UNIX or TCP control channel (cli.md §12).

use std::io;
use std::process::ExitCode;

use vtpm::tools::{print_err, print_out};

use vtpm::tools::ioctl::args::{self, Outcome};
use vtpm::tools::ioctl::help;
use vtpm::tools::ioctl::run::{self, IoctlError};

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    let program = args::program_name(&argv);
    let parsed = args::parse(&argv);
    for warning in &parsed.warnings {
        print_err(warning);
    }
    let status = match parsed.outcome {
        Outcome::Help => print_out(&help::usage(&program), 0),
        Outcome::Version => print_out(&format!("{}\n", help::version_line()), 0),
        Outcome::Refused(err) => {
            print_err(&err.to_string());
            1
        }
        Outcome::Run(invocation) => {
            match run::run(
                &invocation,
                &mut io::stdin().lock(),
                &mut io::stdout().lock(),
            ) {
                Ok(()) => 0,
                Err(IoctlError::NotAsDocumented) => print_out(&help::usage(&program), 1),
                // The messages are swtpm_ioctl's and already carry the cause's text.
                Err(err) => {
                    print_err(&err.to_string());
                    1
                }
            }
        }
    };
    ExitCode::from(status)
}
