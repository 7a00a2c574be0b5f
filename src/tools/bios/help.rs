//! The usage text of `swtpm_bios` (`-h`, `-v` and after a bad option).
//!
//! Same layout as swtpm_bios', in our own words: the version line, an empty line,
//! `<argv0> [options]`, a short summary, then one tab-indented line per option.

use crate::tools::VERSION;

#[rustfmt::skip]
const OPTIONS: &[&str] = &[
    "--tpm-device <device>  the TPM device to use; default: $TPM_DEVICE, else /dev/tpm0",
    "--tcp [<host>]:[<port>] connect to this TCP data port; the host defaults",
    "                       to 127.0.0.1, the port to 6545",
    "--unix <path>          connect to this UNIX data socket",
    "--tpm2                 the TPM is a TPM 2",
    "-c                     TPM_Startup(ST_CLEAR) (the default)",
    "-s                     TPM_Startup(ST_STATE)",
    "-d                     TPM_Startup(ST_DEACTIVATED) and nothing more on a TPM 1.2;",
    "                       no Startup on a TPM 2",
    "-n                     no Startup",
    "-o                     only the Startup: no physical presence, enable, activate",
    "-cs                    TPM 1.2: TPM_ContinueSelfTest;",
    "                       TPM 2: TPM2_IncrementalSelfTest(SHA-256)",
    "-ea                    TPM 1.2: make sure the TPM is activated; exit with 129",
    "                       if that needs a reset",
    "-u                     TPM 1.2: give up physical presence;",
    "                       TPM 2: set a random platform hierarchy password",
    "-v                     print the version (and this text)",
    "-h                     print this text and exit",
];

pub fn usage(program: &str) -> String {
    let mut out = format!(
        "TPM emulator BIOS emulator version {VERSION} (vtpm, swtpm-compatible), Copyright (c) \
         2026 the vtpm developers\n\n\
         {program} [options]\n\n\
         Sends what a BIOS sends to a TPM at start-up: TPM_Startup (unless -n), then (unless\n\
         -o) physical presence, enable and activate, optionally giving up physical presence.\n\n\
         Options:\n"
    );
    for line in OPTIONS {
        out.push('\t');
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_options() {
        let text = usage("prog");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TPM emulator BIOS emulator version "));
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "prog [options]");
        for option in [
            "--tpm-device",
            "--tcp",
            "--unix",
            "--tpm2",
            "-c ",
            "-s ",
            "-d ",
            "-n ",
            "-o ",
            "-cs ",
            "-ea ",
            "-u ",
            "-v ",
            "-h ",
        ] {
            assert!(text.contains(&format!("\t{option}")), "{option}");
        }
    }
}
