//! The counting tools a daemon can run under: callgrind (user-space instructions, the
//! same on a busy machine as on an idle one) and `strace -c` (system calls), and the
//! parsers for what they write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::Flavor;

pub enum Tool {
    Plain,
    /// `valgrind --tool=callgrind`, profile written to `out`; the daemon runs without
    /// its seccomp filter (`--seccomp action=none`: valgrind cannot run the seccomp
    /// system call).
    Callgrind {
        out: PathBuf,
    },
    /// `strace -f -c`, the summary table written to `out`.
    Strace {
        out: PathBuf,
    },
}

impl Tool {
    /// The command that runs `flavor` with `args` under this tool. Without cargo's
    /// `LD_LIBRARY_PATH` (the toolchain's and target directories, which `cargo bench`
    /// sets): the dynamic loader would search them first, as no deployment does.
    pub fn command(&self, flavor: Flavor, args: &[String]) -> Command {
        let mut command = self.bare_command(flavor, args);
        command.env_remove("LD_LIBRARY_PATH");
        command
    }

    fn bare_command(&self, flavor: Flavor, args: &[String]) -> Command {
        match self {
            Tool::Plain => {
                let mut command = Command::new(flavor.program());
                command.args(args);
                command
            }
            Tool::Callgrind { out } => {
                let mut command = Command::new("valgrind");
                command
                    .arg("--tool=callgrind")
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(flavor.program())
                    .args(args)
                    .args(["--seccomp", "action=none"]);
                command
            }
            Tool::Strace { out } => {
                let mut command = Command::new("strace");
                command
                    .args(["-f", "-c", "-o"])
                    .arg(out)
                    .arg("--")
                    .arg(flavor.program())
                    .args(args);
                command
            }
        }
    }
}

/// The total instruction count (`totals:` or `summary:`) of a callgrind profile.
pub fn callgrind_total(profile: &Path) -> u64 {
    let text = std::fs::read_to_string(profile)
        .unwrap_or_else(|err| panic!("read {}: {err}", profile.display()));
    text.lines()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or_else(|| line.strip_prefix("summary:"))
        })
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("{} has no totals line", profile.display()))
}

/// Instructions per function from `callgrind_annotate` (self cost, or inclusive).
pub fn callgrind_functions(profile: &Path, inclusive: bool) -> BTreeMap<String, i64> {
    let output = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg("--threshold=100")
        .arg(profile)
        .output()
        .expect("run callgrind_annotate");
    let mut functions = BTreeMap::new();
    // Lines look like "  1,234,567 (12.34%)  file:function [object]" (the share only in
    // some versions); the header and the totals line have no "file:function".
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<i64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('(') {
            Some(after) => after.split_once(')').map_or("", |(_, r)| r).trim_start(),
            None => rest,
        };
        let Some((_, function)) = rest.split_once(':') else {
            continue;
        };
        // "name [/usr/lib/.../libcrypto.so.3]" becomes "name (libcrypto.so.3)": stripped
        // libraries only have addresses, which mean little without the library.
        let (name, object) = function.split_once(" [").unwrap_or((function, ""));
        let object = object.trim_end_matches(']');
        let object = match object.rsplit('/').next() {
            Some(name) if !name.is_empty() => name,
            _ => "no object",
        };
        let key = format!("{} ({object})", name.trim());
        *functions.entry(key).or_insert(0) += count;
    }
    functions
}

/// Calls per system call from an `strace -c` summary table.
pub fn strace_counts(summary: &Path) -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(summary)
        .unwrap_or_else(|err| panic!("read {}: {err}", summary.display()));
    let mut counts = BTreeMap::new();
    // "% time  seconds  usecs/call  calls  errors  syscall"; errors may be blank.
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].starts_with('%') || fields[0].starts_with('-') {
            continue;
        }
        let (Ok(calls), Some(name)) = (fields[3].parse::<i64>(), fields.last()) else {
            continue;
        };
        if *name != "total" {
            counts.insert(name.to_string(), calls);
        }
    }
    counts
}
