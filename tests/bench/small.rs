//! Small TPM commands (the traffic of a booting guest) and the control channel's round
//! trip: latency of every command, and the commands per second of one client that sends
//! the next command when the last is answered (samples over their summed latencies).

use std::time::Instant;

use crate::common::tpm2;
use crate::context::{Bench, Session};
use crate::daemon::{Flavor, control_round_trip};
use crate::echo::Echo;
use crate::machine::cpu_time_ns;
use crate::report::Row;
use crate::stats::Samples;
use crate::wire::{DataConn, check_ok};

/// PCR 16 is the debug PCR: extendable from locality 0 and meaningless to anyone.
const PCR: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmallCommand {
    GetRandom,
    PcrRead,
    PcrExtend,
}

impl SmallCommand {
    pub const ALL: [SmallCommand; 3] = [
        SmallCommand::GetRandom,
        SmallCommand::PcrRead,
        SmallCommand::PcrExtend,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SmallCommand::GetRandom => "TPM2_GetRandom(32)",
            SmallCommand::PcrRead => "TPM2_PCR_Read(16, SHA-256)",
            SmallCommand::PcrExtend => "TPM2_PCR_Extend(16, SHA-256)",
        }
    }

    pub fn bytes(self) -> Vec<u8> {
        match self {
            SmallCommand::GetRandom => tpm2::get_random(32),
            SmallCommand::PcrRead => tpm2::pcr_read_sha256(PCR),
            SmallCommand::PcrExtend => tpm2::pcr_extend_sha256(PCR, &[0x5a; 32]),
        }
    }
}

/// Sends `command` `count` times, each checked; returns the latencies in µs.
pub fn batch(data: &mut DataConn, command: &[u8], count: usize, samples: &mut Samples) {
    for _ in 0..count {
        let started = Instant::now();
        let response = data.transact(command);
        let elapsed = started.elapsed();
        check_ok(response, "small command");
        samples.push_micros(elapsed);
    }
}

/// Latency of each small command on both daemons' data channels, in interleaved rounds,
/// and of the echo server (the transport's reference) in the same rounds; adds the rows
/// and returns the median ratio vtpm/swtpm per command.
pub fn run(
    bench: &mut Bench,
    section: &'static str,
    pair: &mut [Session; 2],
    echo: &mut Echo,
) -> Vec<(SmallCommand, f64)> {
    let plan = &bench.plan;
    let commands: Vec<(SmallCommand, Vec<u8>)> =
        SmallCommand::ALL.iter().map(|&c| (c, c.bytes())).collect();
    let mut latencies: Vec<[Samples; 2]> = vec![Default::default(); commands.len()];
    // The daemons' CPU time per command, per batch (polling for the next command
    // included), in µs.
    let mut cpu: Vec<[Samples; 2]> = vec![Default::default(); commands.len()];
    let mut echo_samples = Samples::default();
    let echo_command = SmallCommand::GetRandom.bytes();
    batch(
        &mut echo.conn,
        &echo_command,
        plan.small_warmup,
        &mut Samples::default(),
    );
    for flavor in Flavor::BOTH {
        for (_, bytes) in &commands {
            batch(
                &mut pair[flavor.index()].data,
                bytes,
                plan.small_warmup,
                &mut Samples::default(),
            );
        }
    }
    for round in 0..plan.small_rounds {
        for flavor in Flavor::in_order(round) {
            let session = &mut pair[flavor.index()];
            let pid = session.daemon.pid();
            for ((samples, cpu), (_, bytes)) in latencies.iter_mut().zip(&mut cpu).zip(&commands) {
                let before = cpu_time_ns(pid);
                batch(
                    &mut session.data,
                    bytes,
                    plan.small_batch,
                    &mut samples[flavor.index()],
                );
                let used = cpu_time_ns(pid).saturating_sub(before);
                cpu[flavor.index()].push(used as f64 / 1e3 / plan.small_batch as f64);
            }
        }
        batch(
            &mut echo.conn,
            &echo_command,
            plan.small_batch,
            &mut echo_samples,
        );
    }
    let mut ratios = Vec::new();
    for ((command, _), samples) in commands.iter().zip(&latencies) {
        let row = Row::compare(section, command.name(), "us", samples, true);
        ratios.push((*command, row.ratio().unwrap_or(f64::NAN)));
        bench.report.add(row);
    }
    bench.report.add(Row::reference(
        section,
        "reference: echo server thread, same client, socket, CPU",
        "us",
        &echo_samples,
    ));
    for ((command, _), samples) in commands.iter().zip(&cpu) {
        bench.report.add(Row::compare(
            section,
            format!("{}: daemon CPU time per command", command.name()),
            "us",
            samples,
            false,
        ));
    }
    for ((command, _), samples) in commands.iter().zip(&latencies) {
        let per_second = samples.each_ref().map(|s| s.len() as f64 / (s.sum() / 1e6));
        bench.report.add(Row::values(
            section,
            format!("{} per second (higher is better)", command.name()),
            "1/s",
            per_second,
        ));
    }
    ratios
}

/// GET_CAPABILITY round trips on both daemons' control channels, interleaved.
pub fn control_channel(bench: &mut Bench, section: &'static str, pair: &mut [Session; 2]) {
    let plan = &bench.plan;
    let mut samples: [Samples; 2] = Default::default();
    for flavor in Flavor::BOTH {
        for _ in 0..plan.small_warmup {
            control_round_trip(&mut pair[flavor.index()].ctrl).expect("GET_CAPABILITY");
        }
    }
    for round in 0..plan.small_rounds {
        for flavor in Flavor::in_order(round) {
            for _ in 0..plan.small_batch {
                let started = Instant::now();
                control_round_trip(&mut pair[flavor.index()].ctrl).expect("GET_CAPABILITY");
                samples[flavor.index()].push_micros(started.elapsed());
            }
        }
    }
    bench.report.add(Row::compare(
        section,
        "control channel GET_CAPABILITY round trip",
        "us",
        &samples,
        true,
    ));
}
