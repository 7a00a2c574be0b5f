//! Self-tests of the test harness in `tests/common`: the TPM 2 command builders against
//! the byte layouts of the TPM 2.0 Library spec (as listed in qemu-testing.md §7), the
//! response parsers, the qtest command validator, and qtest access widths in a real
//! QEMU. They involve no vtpm code, so they are meaningful before the daemon exists.

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::qemu::process_state;
use common::qtest::validate_command;
use common::tpm2::{
    self, NV_OWNER_RW_NO_DA, StartupType, StorageKey, TpmError, parse_no_output,
    parse_no_output_with_session, parse_pcr_read_sha256,
};
use common::{Backend, BackendPaths, Qemu, QemuOptions, TpmDevice, poll_until};

/// Parses "80 01 00 0C" style hex (spaces ignored) into bytes.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// authorizationSize + TPM_RS_PW session with an empty password.
const EMPTY_PASSWORD_AUTH: &str = "00000009 40000009 0000 00 0000";

#[test]
fn startup_shutdown_and_get_random_match_the_spec() {
    assert_eq!(
        tpm2::startup(StartupType::Clear),
        hex("8001 0000000C 00000144 0000")
    );
    assert_eq!(
        tpm2::startup(StartupType::State),
        hex("8001 0000000C 00000144 0001")
    );
    assert_eq!(
        tpm2::shutdown(StartupType::State),
        hex("8001 0000000C 00000145 0001")
    );
    assert_eq!(tpm2::get_random(16), hex("8001 0000000C 0000017B 0010"));
}

#[test]
fn pcr_commands_match_the_spec() {
    let digest = [0xAB; 32];
    let expected = format!(
        "8002 00000041 00000182 0000000A {EMPTY_PASSWORD_AUTH} 00000001 000B {}",
        "AB".repeat(32)
    );
    assert_eq!(tpm2::pcr_extend_sha256(10, &digest), hex(&expected));
    assert_eq!(
        tpm2::pcr_read_sha256(10),
        hex("8001 00000014 0000017E 00000001 000B 03 000400")
    );
    assert_eq!(
        tpm2::get_capability_pcrs(),
        hex("8001 00000016 0000017A 00000005 00000000 00000001")
    );
}

#[test]
fn nv_commands_match_the_spec() {
    let define = format!(
        "8002 0000002D 0000012A 40000001 {EMPTY_PASSWORD_AUTH} 0000 \
         000E 01500020 000B 02060006 0000 0020"
    );
    assert_eq!(
        tpm2::nv_define_space(0x0150_0020, 32, NV_OWNER_RW_NO_DA),
        hex(&define)
    );
    let write = format!(
        "8002 00000043 00000137 40000001 01500020 {EMPTY_PASSWORD_AUTH} 0020 {} 0000",
        "5A".repeat(32)
    );
    assert_eq!(tpm2::nv_write(0x0150_0020, 0, &[0x5A; 32]), hex(&write));
    let read = format!("8002 00000023 0000014E 40000001 01500020 {EMPTY_PASSWORD_AUTH} 0020 0000");
    assert_eq!(tpm2::nv_read(0x0150_0020, 0, 32), hex(&read));
}

#[test]
fn object_commands_match_the_spec() {
    let ecc = format!(
        "8002 00000043 00000131 40000001 {EMPTY_PASSWORD_AUTH} 0004 0000 0000 \
         001A 0023 000B 00030072 0000 0006 0080 0043 0010 0003 0010 0000 0000 \
         0000 00000000"
    );
    assert_eq!(tpm2::create_primary(StorageKey::EccP256), hex(&ecc));
    let rsa = format!(
        "8002 00000043 00000131 40000001 {EMPTY_PASSWORD_AUTH} 0004 0000 0000 \
         001A 0001 000B 00030072 0000 0006 0080 0043 0010 0800 00000000 0000 \
         0000 00000000"
    );
    assert_eq!(tpm2::create_primary(StorageKey::Rsa2048), hex(&rsa));
    assert_eq!(
        tpm2::read_public(0x8000_0001),
        hex("8001 0000000E 00000173 80000001")
    );
    assert_eq!(
        tpm2::flush_context(0x8000_0000),
        hex("8001 0000000E 00000165 80000000")
    );
}

#[test]
fn parsers_accept_spec_responses_and_report_errors() {
    assert_eq!(parse_no_output(&hex("8001 0000000A 00000000")), Ok(()));
    assert_eq!(
        parse_no_output_with_session(&hex("8002 00000013 00000000 00000000 0000 01 0000")),
        Ok(())
    );
    assert_eq!(
        parse_no_output(&hex("8001 0000000A 00000100")),
        Err(TpmError::Rc(0x100))
    );
    // The size field disagrees with the length.
    assert!(matches!(
        parse_no_output(&hex("8001 0000000B 00000000")),
        Err(TpmError::Malformed(_))
    ));
    // A session response without the password auth area.
    assert!(matches!(
        parse_no_output_with_session(&hex("8002 0000000E 00000000 00000000")),
        Err(TpmError::Malformed(_))
    ));

    let pcr_read = format!(
        "8001 0000003E 00000000 00000014 00000001 000B 03 000400 00000001 0020 {}",
        "11".repeat(32)
    );
    let value = parse_pcr_read_sha256(&hex(&pcr_read), 10).unwrap();
    assert_eq!(value.update_counter, 0x14);
    assert_eq!(value.digest, [0x11; 32]);
    // The TPM returned another PCR than the one asked for.
    assert!(matches!(
        parse_pcr_read_sha256(&hex(&pcr_read), 11),
        Err(TpmError::Malformed(_))
    ));
}

#[test]
fn qtest_validator_rejects_lines_that_would_crash_qemu() {
    assert_eq!(validate_command("readl 0xfed40000"), Ok(()));
    assert_eq!(validate_command("write 0x1000 0x2 0xabcd"), Ok(()));
    // A known command with missing arguments trips an assertion in QEMU 7.2.
    assert!(validate_command("readb").is_err());
    assert!(validate_command("write 0x1000 0x2").is_err());
    // Without 0x, QEMU would read a leading 0 as octal.
    assert!(validate_command("readl 0100").is_err());
    assert!(validate_command("memread 0x0 0x4").is_err());
}

/// qtest loads and stores of each width against guest RAM: little-endian assembly,
/// truncation, and byte ranges in address order.
#[test]
fn qtest_access_widths_on_guest_ram() {
    let dir = common::short_tempdir();
    let paths = BackendPaths::new(&dir.path().join("state"), dir.path());
    let _backend = Backend::debian_swtpm().spawn(&paths, &[]);
    let mut qemu = Qemu::start(QemuOptions::new(
        dir.path(),
        &paths.ctrl_socket,
        TpmDevice::Crb,
    ));
    let ram = 0x10_0000;
    let qtest = qemu.qtest();
    qtest.writel(ram, 0x1122_3344);
    assert_eq!(qtest.readb(ram), 0x44);
    assert_eq!(qtest.readw(ram), 0x3344);
    assert_eq!(qtest.read(ram, 4), [0x44, 0x33, 0x22, 0x11]);
    qtest.writew(ram + 2, 0xA1B2);
    qtest.writeb(ram, 0xC3);
    assert_eq!(qtest.readl(ram), 0xA1B2_33C3);
    qtest.write(ram + 8, b"qtest bytes");
    assert_eq!(qtest.read(ram + 8, 11), b"qtest bytes");
    qemu.quit();
}

/// QEMU's `exec:` helpers outlive QEMU; dropping a `Qemu` must kill them too.
#[test]
fn dropping_qemu_kills_its_exec_helpers() {
    let dir = common::short_tempdir();
    let paths = BackendPaths::new(&dir.path().join("state"), dir.path());
    let _backend = Backend::debian_swtpm().spawn(&paths, &[]);
    // An incoming stream that never arrives keeps the helper running.
    let options =
        QemuOptions::new(dir.path(), &paths.ctrl_socket, TpmDevice::Tis).incoming("exec:sleep 600");
    let qemu = Qemu::start(options);
    let deadline = Instant::now() + Duration::from_secs(10);
    let helpers = poll_until(deadline, "QEMU's exec: helper", || {
        Some(qemu.helper_pids()).filter(|pids| !pids.is_empty())
    });
    drop(qemu);
    for pid in helpers {
        // Orphans are reparented to PID 1, which may leave them as zombies.
        let state = process_state(pid);
        assert!(
            matches!(state, None | Some('Z')),
            "helper {pid} still alive ({state:?})"
        );
    }
}

/// Touching TPM registers on an `inmigrate` destination hangs QEMU 7.2 with swtpm 0.7.1
/// (qemu-testing.md §6.4); the harness must refuse instead.
#[test]
#[should_panic(expected = "inmigrate destination")]
fn tpm_access_on_inmigrate_destination_is_refused() {
    let dir = common::short_tempdir();
    let paths = BackendPaths::new(&dir.path().join("state"), dir.path());
    let _backend = Backend::debian_swtpm().spawn(&paths, &[]);
    let options =
        QemuOptions::new(dir.path(), &paths.ctrl_socket, TpmDevice::Tis).incoming("defer");
    let mut qemu = Qemu::start(options);
    assert_eq!(qemu.runstate(), "inmigrate");
    qemu.tpm();
}
