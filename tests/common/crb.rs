//! Guest-side driver for QEMU's `tpm-crb` (Command Response Buffer interface, locality
//! 0 only): sends one TPM command, polling registers with deadlines
//! (qemu-testing.md §4.2).

use std::time::{Duration, Instant};

use super::poll_until;
use super::qtest::Qtest;
use super::tpm2::{TpmTransport, packet_size};

const CRB_BASE: u64 = 0xFED4_0000;

const LOC_STATE: u64 = 0x00;
const LOC_CTRL: u64 = 0x08;
const LOC_STS: u64 = 0x0C;
const CTRL_REQ: u64 = 0x40;
const CTRL_STS: u64 = 0x44;
const CTRL_START: u64 = 0x4C;
const CTRL_CMD_SIZE: u64 = 0x58;
const CTRL_CMD_LADDR: u64 = 0x5C;
const CTRL_CMD_HADDR: u64 = 0x60;
const CTRL_RSP_SIZE: u64 = 0x64;
/// 64-bit in QEMU 7.2, two 32-bit halves in newer QEMU: read as two halves.
const CTRL_RSP_LADDR: u64 = 0x68;
const CTRL_RSP_HADDR: u64 = 0x6C;

const LOC_STATE_VALID_ASSIGNED: u32 = 0x82;
const LOC_STATE_ASSIGNED: u32 = 0x02;
const LOC_CTRL_REQUEST_ACCESS: u32 = 0x1;
const LOC_CTRL_RELINQUISH: u32 = 0x2;
const LOC_STS_GRANTED: u32 = 0x1;
const CTRL_REQ_CMD_READY: u32 = 0x1;
const CTRL_REQ_GO_IDLE: u32 = 0x2;
const CTRL_STS_FATAL: u32 = 0x1;
const CTRL_STS_IDLE: u32 = 0x2;
const CTRL_START_GO: u32 = 0x1;

const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Crb<'q> {
    qtest: &'q mut Qtest,
}

impl<'q> Crb<'q> {
    pub fn new(qtest: &'q mut Qtest) -> Crb<'q> {
        Crb { qtest }
    }

    fn read(&mut self, offset: u64) -> u32 {
        self.qtest.readl(CRB_BASE + offset)
    }

    fn write(&mut self, offset: u64, value: u32) {
        self.qtest.writel(CRB_BASE + offset, value);
    }

    fn wait(&mut self, offset: u64, mask: u32, value: u32, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        poll_until(deadline, &format!("CRB {what}"), || {
            (self.read(offset) & mask == value).then_some(())
        });
    }

    fn address(&mut self, low: u64, high: u64) -> u64 {
        u64::from(self.read(low)) | (u64::from(self.read(high)) << 32)
    }
}

impl TpmTransport for Crb<'_> {
    fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        assert_eq!(
            packet_size(command),
            command.len(),
            "command size field is wrong"
        );
        self.write(LOC_CTRL, LOC_CTRL_REQUEST_ACCESS);
        let assigned = LOC_STATE_VALID_ASSIGNED;
        self.wait(
            LOC_STATE,
            assigned,
            assigned,
            REGISTER_TIMEOUT,
            "locality grant",
        );
        assert_eq!(
            self.read(LOC_STS) & LOC_STS_GRANTED,
            LOC_STS_GRANTED,
            "CRB LOC_STS"
        );

        self.write(CTRL_REQ, CTRL_REQ_CMD_READY);
        self.wait(CTRL_STS, CTRL_STS_IDLE, 0, REGISTER_TIMEOUT, "leaving idle");

        // The buffers' places come from the registers, not from constants.
        let cmd_addr = self.address(CTRL_CMD_LADDR, CTRL_CMD_HADDR);
        let cmd_size = self.read(CTRL_CMD_SIZE) as usize;
        let rsp_addr = self.address(CTRL_RSP_LADDR, CTRL_RSP_HADDR);
        let rsp_size = self.read(CTRL_RSP_SIZE) as usize;
        assert!(
            command.len() <= cmd_size,
            "command of {} bytes does not fit the CRB buffer ({cmd_size})",
            command.len()
        );
        self.qtest.write(cmd_addr, command);

        self.write(CTRL_START, CTRL_START_GO);
        self.wait(
            CTRL_START,
            CTRL_START_GO,
            0,
            EXECUTE_TIMEOUT,
            "command completion",
        );
        let sts = self.read(CTRL_STS);
        assert_eq!(
            sts & CTRL_STS_FATAL,
            0,
            "CRB reports a fatal error (CTRL_STS {sts:#x})"
        );

        let header = self.qtest.read(rsp_addr, 10);
        let size = packet_size(&header);
        assert!((10..=rsp_size).contains(&size), "CRB response size {size}");
        let response = self.qtest.read(rsp_addr, size);

        self.write(CTRL_REQ, CTRL_REQ_GO_IDLE);
        self.wait(
            CTRL_STS,
            CTRL_STS_IDLE,
            CTRL_STS_IDLE,
            REGISTER_TIMEOUT,
            "going idle",
        );
        self.write(LOC_CTRL, LOC_CTRL_RELINQUISH);
        self.wait(
            LOC_STATE,
            LOC_STATE_ASSIGNED,
            0,
            REGISTER_TIMEOUT,
            "locality release",
        );
        response
    }
}
