//! The integration tests' helpers the benchmark shares: the control-channel client and
//! the TPM 2 command builders (each used in part, as in the tests).

#[allow(dead_code)]
#[path = "../common/ctrl.rs"]
pub mod ctrl;
#[allow(dead_code)]
#[path = "../common/tpm2.rs"]
pub mod tpm2;
