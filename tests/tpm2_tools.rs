//! tpm2-tools against vtpm through the swtpm TCTI (`-T swtpm:host=…,port=…`, which uses
//! the data port and the next one for the control channel): startup, getrandom,
//! pcrextend/pcrread, createprimary, nvdefine/nvwrite/nvread, and a quote checked with
//! tpm2_checkquote.

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{Process, free_port_pair, vtpm_swtpm};
use sha2::{Digest, Sha256};

struct Tools {
    tcti: String,
    dir: tempfile::TempDir,
    daemon: Process,
}

impl Tools {
    /// vtpm with TCP data port P and TCP control port P+1, as the TCTI expects.
    fn start(flags: &str) -> Tools {
        let dir = common::short_tempdir();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let port = free_port_pair();
        let mut daemon = Process::start(
            &vtpm_swtpm(),
            &[
                "socket",
                "--tpm2",
                "--tpmstate",
                &format!("dir={}", state.display()),
                "--server",
                &format!("type=tcp,port={port}"),
                "--ctrl",
                &format!("type=tcp,port={}", port + 1),
                "--flags",
                flags,
            ],
            dir.path(),
        );
        daemon.wait_tcp_port(port + 1);
        Tools {
            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
            dir,
            daemon,
        }
    }

    /// Runs a tpm2-tools command in the test's directory; panics with its output on failure.
    fn run(&self, tool: &str, args: &[&str]) -> String {
        let output = Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|err| {
                panic!("{tool}: {err} (install tpm2-tools and libtss2-tcti-swtpm0)")
            });
        assert!(
            output.status.success(),
            "{tool} {args:?} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[test]
fn startup_getrandom_and_pcrs() {
    let tools = Tools::start("not-need-init");
    tools.run("tpm2_startup", &["-c"]);
    let random = tools.run("tpm2_getrandom", &["16", "--hex"]);
    assert_eq!(random.trim().len(), 32, "{random}");
    assert!(random.trim().chars().all(|c| c.is_ascii_hexdigit()));

    let digest = "01".repeat(32);
    tools.run("tpm2_pcrextend", &[&format!("16:sha256={digest}")]);
    let read = tools.run("tpm2_pcrread", &["sha256:16"]);
    // PCR 16 starts at zero: the new value is SHA-256(32 zero bytes || digest).
    let expected: String = Sha256::digest([[0u8; 32], [1u8; 32]].concat())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let line = read
        .lines()
        .find(|l| l.trim_start().starts_with("16:"))
        .expect(&read);
    assert_eq!(
        line.split("0x").nth(1).map(str::trim),
        Some(expected.as_str()),
        "{read}"
    );
}

#[test]
fn createprimary_and_nv() {
    let tools = Tools::start("not-need-init,startup-clear");
    tools.run(
        "tpm2_createprimary",
        &["-C", "o", "-c", &tools.path("primary.ctx"), "-Q"],
    );
    tools.run("tpm2_flushcontext", &["-t"]);
    tools.run(
        "tpm2_nvdefine",
        &[
            "0x1500016",
            "-C",
            "o",
            "-s",
            "32",
            "-a",
            "ownerread|ownerwrite|authread|authwrite",
        ],
    );
    let data = b"thirty-two bytes of nv test data";
    std::fs::write(tools.dir.path().join("nv.in"), data).unwrap();
    tools.run(
        "tpm2_nvwrite",
        &["0x1500016", "-C", "o", "-i", &tools.path("nv.in")],
    );
    tools.run(
        "tpm2_nvread",
        &[
            "0x1500016",
            "-C",
            "o",
            "-s",
            "32",
            "-o",
            &tools.path("nv.out"),
        ],
    );
    assert_eq!(
        std::fs::read(tools.dir.path().join("nv.out")).unwrap(),
        data
    );
}

#[test]
fn quote_verifies() {
    let tools = Tools::start("not-need-init,startup-clear");
    let p = |name: &str| tools.path(name);
    tools.run(
        "tpm2_pcrextend",
        &[&format!("0:sha256={}", "ab".repeat(32))],
    );
    tools.run(
        "tpm2_createprimary",
        &["-C", "e", "-c", &p("primary.ctx"), "-Q"],
    );
    tools.run("tpm2_flushcontext", &["-t"]);
    tools.run(
        "tpm2_create",
        &[
            "-C",
            &p("primary.ctx"),
            "-G",
            "ecc256:ecdsa-sha256:null",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
            "-u",
            &p("ak.pub"),
            "-r",
            &p("ak.priv"),
            "-Q",
        ],
    );
    tools.run("tpm2_flushcontext", &["-t"]);
    tools.run(
        "tpm2_load",
        &[
            "-C",
            &p("primary.ctx"),
            "-u",
            &p("ak.pub"),
            "-r",
            &p("ak.priv"),
            "-c",
            &p("ak.ctx"),
            "-Q",
        ],
    );
    tools.run("tpm2_flushcontext", &["-t"]);
    tools.run(
        "tpm2_readpublic",
        &["-c", &p("ak.ctx"), "-f", "pem", "-o", &p("ak.pem"), "-Q"],
    );
    let quote_args = ["-m", &p("quote.msg"), "-s", &p("quote.sig")];
    tools.run(
        "tpm2_quote",
        &[
            &[
                "-c",
                &p("ak.ctx"),
                "-l",
                "sha256:0,16",
                "-q",
                "c0ffee",
                "-o",
                &p("quote.pcrs"),
                "-g",
                "sha256",
            ][..],
            &quote_args,
        ]
        .concat(),
    );
    let checked = tools.run(
        "tpm2_checkquote",
        &[
            &[
                "-u",
                &p("ak.pem"),
                "-f",
                &p("quote.pcrs"),
                "-g",
                "sha256",
                "-q",
                "c0ffee",
            ][..],
            &quote_args,
        ]
        .concat(),
    );
    assert!(checked.contains("sha256"), "{checked}");
    // A wrong nonce must not verify.
    let forged = Command::new("tpm2_checkquote")
        .args(
            [
                &[
                    "-u",
                    &p("ak.pem"),
                    "-f",
                    &p("quote.pcrs"),
                    "-g",
                    "sha256",
                    "-q",
                    "badbad",
                ][..],
                &quote_args,
            ]
            .concat(),
        )
        .output()
        .unwrap();
    assert!(!forged.status.success());
}

#[test]
fn daemon_exits_cleanly_after_tools() {
    let mut tools = Tools::start("not-need-init,startup-clear");
    tools.run("tpm2_getrandom", &["8", "--hex"]);
    tools.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(tools.daemon.wait_exit(Duration::from_secs(10)).success());
}
