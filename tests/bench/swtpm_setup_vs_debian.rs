//! Time to manufacture a TPM 2 with EK and platform certificates: vtpm's swtpm_setup
//! (built-in CA) against Debian's swtpm_setup (swtpm_localca, swtpm_cert), both
//! driving the same daemon and using the same, already created, CA. Runs alternate
//! between the two (and which goes first) so that machine noise hits both alike; the
//! medians and their ratio are printed.
//!
//!   cargo bench --bench swtpm_setup_vs_debian               # full: 15 rounds
//!   cargo bench --bench swtpm_setup_vs_debian -- --quick    # CI-sized: 3 rounds
//!   VTPM_BENCH_DAEMON=vtpm cargo bench --bench swtpm_setup_vs_debian   # vtpm's daemon for both
//!
//! The daemon defaults to Debian's /usr/bin/swtpm, so that the numbers compare the
//! setup tools only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DEBIAN_SETUP: &str = "/usr/bin/swtpm_setup";

fn write_config(dir: &Path) -> PathBuf {
    let ca = dir.join("localca");
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .expect("write swtpm-localca.conf");
    let options = dir.join("swtpm-localca.options");
    std::fs::write(
        &options,
        "--platform-manufacturer Fedora\n--platform-version 2.1\n--platform-model QEMU\n",
    )
    .expect("write swtpm-localca.options");
    let setup_conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca_conf.display(),
            options.display()
        ),
    )
    .expect("write swtpm_setup.conf");
    setup_conf
}

/// One manufacturing run into a fresh state directory; its wall-clock time.
fn manufacture(setup: &Path, daemon: &str, config: &Path, state: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(state);
    std::fs::create_dir_all(state).expect("create state dir");
    let start = Instant::now();
    let output = Command::new(setup)
        .args(["--tpm2", "--tpm", daemon, "--tpm-state"])
        .arg(state)
        .arg("--config")
        .arg(config)
        .args([
            "--vmid",
            "bench:1",
            "--createek",
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
        ])
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", setup.display()));
    let elapsed = start.elapsed();
    assert!(
        output.status.success(),
        "{} failed: {}{}",
        setup.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let rounds = if quick { 3 } else { 15 };
    let vtpm_setup = PathBuf::from(env!("CARGO_BIN_EXE_swtpm_setup"));
    let daemon = match std::env::var("VTPM_BENCH_DAEMON").as_deref() {
        Ok("vtpm") => format!("{} socket", vtpm_setup.with_file_name("swtpm").display()),
        _ => "/usr/bin/swtpm socket".to_string(),
    };
    let dir = std::env::temp_dir().join(format!("vtpm-bench-setup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let config = write_config(&dir);
    let state = dir.join("state");
    let contenders = [
        ("vtpm", vtpm_setup),
        ("debian", PathBuf::from(DEBIAN_SETUP)),
    ];
    // Warm-up: the first run creates the CA (not part of the comparison), then each
    // tool once to load caches.
    for (_, setup) in &contenders {
        manufacture(setup, &daemon, &config, &state);
    }
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            times[which].push(manufacture(&contenders[which].1, &daemon, &config, &state));
        }
    }
    let vtpm = median(&mut times[0]);
    let debian = median(&mut times[1]);
    println!(
        "swtpm_setup TPM 2 with EK + platform certificates, daemon '{daemon}', {rounds} interleaved rounds:"
    );
    println!("  vtpm   median {:>8.1} ms", vtpm.as_secs_f64() * 1e3);
    println!("  debian median {:>8.1} ms", debian.as_secs_f64() * 1e3);
    println!(
        "  ratio vtpm/debian {:.2} ({:.2}x {})",
        vtpm.as_secs_f64() / debian.as_secs_f64(),
        if vtpm < debian {
            debian.as_secs_f64() / vtpm.as_secs_f64()
        } else {
            vtpm.as_secs_f64() / debian.as_secs_f64()
        },
        if vtpm < debian { "faster" } else { "slower" }
    );
    let _ = std::fs::remove_dir_all(&dir);
}
