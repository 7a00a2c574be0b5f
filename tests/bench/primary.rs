//! TPM2_CreatePrimary RSA-2048: the time goes into libtpms' key generation, which both
//! daemons share; with the same starting state (same seeds) both generate the same key.
//! A ratio near 1.0 says the comparison is fair; far from it, something else differs.

use std::time::Instant;

use crate::common::tpm2::{self, StorageKey};
use crate::context::{Bench, Session};
use crate::daemon::Flavor;
use crate::report::Row;
use crate::stats::Samples;

const SECTION: &str = "libtpms-bound (fairness check)";
/// How far from 1.0 the ratio may be and still count as fair.
const FAIR: f64 = 0.10;

pub fn run(bench: &mut Bench, pair: &mut [Session; 2]) {
    let command = tpm2::create_primary(StorageKey::Rsa2048);
    let mut samples: [Samples; 2] = Default::default();
    for round in 0..bench.plan.primary_rounds {
        for flavor in Flavor::in_order(round) {
            let data = &mut pair[flavor.index()].data;
            let started = Instant::now();
            let response = data.transact(&command);
            samples[flavor.index()].push_millis(started.elapsed());
            let handle = tpm2::parse_create_primary(response)
                .expect("TPM2_CreatePrimary")
                .handle;
            data.expect_ok(&tpm2::flush_context(handle), "TPM2_FlushContext");
        }
    }
    let row = Row::compare(SECTION, "TPM2_CreatePrimary RSA-2048", "ms", &samples, true);
    let ratio = row.ratio().unwrap_or(f64::NAN);
    let verdict = if (ratio - 1.0).abs() <= FAIR {
        "fair"
    } else {
        "NOT fair: look for a difference besides libtpms"
    };
    bench.report.add(row);
    bench.report.note(format!(
        "CreatePrimary RSA-2048 ratio {ratio:.2}: {verdict} (expected 1.0 within {FAIR})"
    ));
}
