//! `swtpm_bios`: vtpm's drop-in for swtpm's BIOS emulator — TPM_Startup and friends over
//! the data channel, as firmware would send them (cli.md §13).

use std::io;
use std::process::ExitCode;

use vtpm::tools::{print_err, print_out};

use vtpm::tools::bios::args::{self, Environment, Outcome};
use vtpm::tools::bios::commands::PLATFORM_AUTH_LEN;
use vtpm::tools::bios::help;
use vtpm::tools::bios::run::{self, Output};
use vtpm::tools::bios::sequence;

/// Exit code for connection and I/O problems.
const EXIT_IO: u8 = 255;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    let program = args::program_name(&argv);
    let status = match args::parse(&argv, &Environment::of_process()) {
        Outcome::Help => print_out(&help::usage(&program), 0),
        Outcome::Usage(message) => {
            if let Some(message) = message {
                print_err(&message);
            }
            print_out(&help::usage(&program), 1)
        }
        Outcome::Refused(err) => {
            print_err(&err.to_string());
            1
        }
        Outcome::Run(plan) => {
            let mut platform_auth = [0u8; PLATFORM_AUTH_LEN];
            if plan.tpm2 && plan.unassert_pp {
                if let Err(err) = getrandom::fill(&mut platform_auth) {
                    print_err(&format!(
                        "Could not get random bytes for the platform password: {err}"
                    ));
                    return ExitCode::from(EXIT_IO);
                }
            }
            let steps = sequence::steps(&plan, &platform_auth);
            let mut output = Output {
                stdout: &mut io::stdout().lock(),
                stderr: &mut io::stderr().lock(),
                tpm2: plan.tpm2,
            };
            match run::run(&plan.target, &steps, &mut output) {
                Ok(finish) => finish.exit_code(),
                // The messages are swtpm_bios' and say all it says.
                Err(err) => {
                    print_err(&err.to_string());
                    EXIT_IO
                }
            }
        }
    };
    ExitCode::from(status)
}
