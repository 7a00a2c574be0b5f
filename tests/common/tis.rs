//! Guest-side driver for QEMU's `tpm-tis` (TIS/FIFO interface): sends one TPM command
//! on a chosen locality, polling registers with deadlines (qemu-testing.md §3.4).

use std::time::{Duration, Instant};

use super::poll_until;
use super::qtest::Qtest;
use super::tpm2::{TpmTransport, packet_size};

const TIS_BASE: u64 = 0xFED4_0000;
const LOCALITY_STRIDE: u64 = 0x1000;

const ACCESS: u64 = 0x00;
const STS: u64 = 0x18;
const DATA_FIFO: u64 = 0x24;

const ACCESS_VALID: u8 = 0x80;
const ACCESS_ACTIVE_LOCALITY: u8 = 0x20;
const ACCESS_REQUEST_USE: u8 = 0x02;
/// Writing activeLocality relinquishes the locality.
const ACCESS_RELINQUISH: u8 = 0x20;

const STS_VALID: u32 = 0x80;
const STS_COMMAND_READY: u32 = 0x40;
const STS_GO: u8 = 0x20;
const STS_DATA_AVAIL: u32 = 0x10;
const STS_EXPECT: u32 = 0x08;
/// STS reads all ones while this locality is not active.
const STS_INACTIVE: u32 = 0xFFFF_FFFF;

const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// RSA key generation can take seconds in some backends.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(60);
/// The TIS buffer in QEMU is 4096 bytes.
const MAX_PACKET: usize = 4096;

pub struct Tis<'q> {
    qtest: &'q mut Qtest,
    locality: u8,
}

impl<'q> Tis<'q> {
    /// `locality` 0–3; QEMU does not grant locality 4 through MMIO.
    pub fn new(qtest: &'q mut Qtest, locality: u8) -> Tis<'q> {
        assert!(
            locality <= 3,
            "TIS locality {locality} cannot be requested via MMIO"
        );
        Tis { qtest, locality }
    }

    fn reg(&self, offset: u64) -> u64 {
        TIS_BASE + u64::from(self.locality) * LOCALITY_STRIDE + offset
    }

    fn access(&mut self) -> u8 {
        self.qtest.readb(self.reg(ACCESS))
    }

    fn sts(&mut self) -> u32 {
        let sts = self.qtest.readl(self.reg(STS));
        assert_ne!(
            sts, STS_INACTIVE,
            "TIS STS read while locality {} inactive",
            self.locality
        );
        sts
    }

    fn burst_count(sts: u32) -> usize {
        ((sts >> 8) & 0xFFFF) as usize
    }

    fn wait_sts(&mut self, mask: u32, value: u32, timeout: Duration, what: &str) -> u32 {
        let deadline = Instant::now() + timeout;
        let what = format!("TIS locality {}: {what}", self.locality);
        poll_until(deadline, &what, || {
            let sts = self.sts();
            (sts & mask == value).then_some(sts)
        })
    }

    fn request_locality(&mut self) {
        let access = self.reg(ACCESS);
        self.qtest.writeb(access, ACCESS_REQUEST_USE);
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        let granted = ACCESS_VALID | ACCESS_ACTIVE_LOCALITY;
        poll_until(deadline, "TIS locality grant", || {
            (self.access() & granted == granted).then_some(())
        });
    }

    fn relinquish_locality(&mut self) {
        let access = self.reg(ACCESS);
        self.qtest.writeb(access, ACCESS_RELINQUISH);
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        poll_until(deadline, "TIS locality release", || {
            (self.access() & ACCESS_ACTIVE_LOCALITY == 0).then_some(())
        });
    }

    fn write_command(&mut self, command: &[u8]) {
        let fifo = self.reg(DATA_FIFO);
        self.qtest.writeb(fifo, command[0]);
        let sts = self.sts();
        assert_eq!(
            sts & (STS_VALID | STS_EXPECT),
            STS_VALID | STS_EXPECT,
            "TIS did not expect more bytes after the first (STS {sts:#010x})"
        );
        let mut written = 1;
        while written < command.len() {
            let sts = self.sts();
            let burst = Self::burst_count(sts);
            assert!(
                burst > 0,
                "TIS burstCount 0 while writing (STS {sts:#010x})"
            );
            let end = command.len().min(written + burst);
            for &byte in &command[written..end] {
                self.qtest.writeb(fifo, byte);
            }
            written = end;
        }
        let sts = self.sts();
        assert_eq!(
            sts & (STS_VALID | STS_EXPECT),
            STS_VALID,
            "TIS still expects bytes after the whole command (STS {sts:#010x})"
        );
    }

    fn read_fifo(&mut self, out: &mut Vec<u8>, count: usize) {
        let fifo = self.reg(DATA_FIFO);
        let target = out.len() + count;
        while out.len() < target {
            let sts = self.sts();
            assert_eq!(
                sts & (STS_VALID | STS_DATA_AVAIL),
                STS_VALID | STS_DATA_AVAIL,
                "TIS response ended early (STS {sts:#010x})"
            );
            let burst = Self::burst_count(sts).max(1).min(target - out.len());
            for _ in 0..burst {
                out.push(self.qtest.readb(fifo));
            }
        }
    }
}

impl TpmTransport for Tis<'_> {
    fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        assert!(
            command.len() <= MAX_PACKET,
            "command larger than the TIS buffer"
        );
        assert_eq!(
            packet_size(command),
            command.len(),
            "command size field is wrong"
        );
        self.request_locality();
        let sts = self.reg(STS);
        self.qtest.writeb(sts, STS_COMMAND_READY as u8);
        let ready = self.wait_sts(
            STS_COMMAND_READY,
            STS_COMMAND_READY,
            REGISTER_TIMEOUT,
            "ready",
        );
        assert!(Self::burst_count(ready) > 0, "TIS ready with burstCount 0");

        self.write_command(command);
        self.qtest.writeb(sts, STS_GO);
        let done = STS_VALID | STS_DATA_AVAIL;
        self.wait_sts(done, done, EXECUTE_TIMEOUT, "response (dataAvail)");

        let mut response = Vec::new();
        self.read_fifo(&mut response, 10);
        let size = packet_size(&response);
        assert!(
            (10..=MAX_PACKET).contains(&size),
            "TIS response size {size}"
        );
        self.read_fifo(&mut response, size - 10);
        let after = self.sts();
        assert_eq!(
            after & STS_DATA_AVAIL,
            0,
            "TIS dataAvail still set after the whole response (STS {after:#010x})"
        );

        self.qtest.writeb(sts, STS_COMMAND_READY as u8);
        self.relinquish_locality();
        response
    }
}
