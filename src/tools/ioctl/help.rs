//! The `--version` line and the usage text of `swtpm_ioctl`.
//!
//! Same layout as swtpm_ioctl's, in our own words: the version line, `Usage: <argv0>
//! command <device path>`, a heading, then one entry per option with the syntax padded
//! to 22 columns, `: ` and the description, further lines indented by 24 spaces (a
//! longer syntax stands on a line of its own).

use crate::tools::VERSION;

const SYNTAX_COLUMNS: usize = 22;

pub fn version_line() -> String {
    format!(
        "TPM emulator control tool version {VERSION} (vtpm, swtpm-compatible), \
         Copyright (c) 2026 the vtpm developers"
    )
}

/// (syntax, description lines)
#[rustfmt::skip]
const ENTRIES: &[(&str, &[&str])] = &[
    ("--tpm-device <device>", &["send the commands to this device file instead of a",
                                "socket (CUSE character devices are not supported)"]),
    ("--tcp [<host>]:[<port>]", &["send the commands to this TCP control port; the",
                                  "host defaults to 127.0.0.1, the port to 6546"]),
    ("--unix <path>", &["send the commands to this UNIX control socket"]),
    ("-c", &["print the capability flags of the control channel"]),
    ("-i", &["initialize the TPM like a hardware TPM_Init; stored",
             "volatile state is resumed and then removed"]),
    ("--stop", &["stop the TPM; the emulator process keeps running"]),
    ("-s", &["stop the TPM and end the emulator process"]),
    ("-e", &["print the tpmEstablished flag"]),
    ("-r <loc>", &["reset the tpmEstablished flag from locality <loc>"]),
    ("-v", &["write the TPM's volatile state to its storage"]),
    ("-C", &["cancel the TPM command in progress"]),
    ("-l <loc>", &["use locality <loc> (0 to 4) for the following TPM",
                   "commands"]),
    ("-h <data>", &["run the DRTM hash sequence over <data> (into PCR 17);",
                    "with '-' the data is read from standard input"]),
    ("--save <type> <file>", &["write the TPM's state blob <type> into <file>; <type>",
                               "is permanent, volatile or savestate"]),
    ("--load <type> <file>", &["send the state blob <type> from <file> to the stopped",
                               "TPM; <type> is permanent, volatile or savestate"]),
    ("-g", &["print the configuration flags (which keys are in use)"]),
    ("-b <buffersize>", &["set the TPM's buffer size (0 only asks) and print the",
                          "size in effect with its minimum and maximum"]),
    ("--info <flags>", &["print implementation details as JSON; <flags> is a",
                         "number (1: specification, 2: attributes, ...)"]),
    ("--lock-storage <n>", &["lock the TPM's storage, trying again up to <n> times"]),
    ("--version", &["print the version and exit"]),
    ("--help", &["print this help and exit"]),
];

pub fn usage(program: &str) -> String {
    let mut out = format!(
        "{}\n\nUsage: {program} command <device path>\n\nCommands and options:\n",
        version_line()
    );
    for (syntax, lines) in ENTRIES {
        // A syntax too long for its column gets a line of its own.
        let mut lead = *syntax;
        if syntax.len() > SYNTAX_COLUMNS {
            out.push_str(&format!("{syntax}\n"));
            lead = "";
        }
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == 0 { ":" } else { " " };
            out.push_str(&format!("{lead:<SYNTAX_COLUMNS$}{sep} {line}\n"));
            lead = "";
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let text = usage("prog");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], version_line());
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "Usage: prog command <device path>");
        assert!(text.ends_with("exit\n\n"));
        assert!(lines.contains(
            &"-c                    : print the capability flags of the control channel"
        ));
        for line in &lines[5..] {
            assert!(line.len() <= 80, "{line}");
        }
    }

    #[test]
    fn every_option_is_listed() {
        let text = usage("prog");
        for option in [
            "--tpm-device",
            "--tcp",
            "--unix",
            "-c ",
            "-i ",
            "--stop",
            "-s ",
            "-e ",
            "-r ",
            "-v ",
            "-C ",
            "-l ",
            "-h ",
            "--save",
            "--load",
            "-g ",
            "-b ",
            "--info",
            "--lock-storage",
            "--version",
            "--help",
        ] {
            assert!(text.lines().any(|l| l.starts_with(option)), "{option}");
        }
    }
}
