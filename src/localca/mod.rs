//! vtpm's built-in local certificate authority: what swtpm_localca and swtpm_cert do
//! for swtpm_setup. Kept apart from `setup` because it knows nothing about TPMs' wire
//! protocols: it turns public keys and TPM facts into signed certificates, and owns the
//! CA directory.
//!
//! * `asn1`: DER building blocks; `profile`: the certificate contents (pure).
//! * `config`: swtpm-localca.conf and .options; `serial`: serial arithmetic (pure).
//! * `keys`: the CA's RSA keys; `store`: the CA directory, its lock and files.

pub mod asn1;
pub mod config;
pub mod keys;
pub mod profile;
pub mod serial;
pub mod store;
