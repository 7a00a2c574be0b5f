//! `swtpm_setup --print-capabilities` (cli.md §11.2), derived from what the TPM daemon
//! it would use reports.

use super::daemon::{Capabilities, DaemonError, TpmProgram};

/// The JSON line: TPM versions and RSA key sizes come from the daemon; passing the
/// state key by file descriptor is offered only when the daemon can take one.
pub fn print(tpm_option: Option<&str>) -> Result<String, DaemonError> {
    let program = TpmProgram::new(tpm_option)?;
    let plain = program.capabilities(false, None)?;
    let tpm2 = if plain.has("tpm-2.0") || !plain.features.iter().any(|f| f.starts_with("tpm-")) {
        program.capabilities(true, None).unwrap_or_default()
    } else {
        Capabilities::default()
    };
    Ok(line(&plain, &tpm2))
}

pub fn line(plain: &Capabilities, tpm2: &Capabilities) -> String {
    let mut features: Vec<String> = Vec::new();
    for version in ["tpm-1.2", "tpm-2.0"] {
        if plain.has(version) {
            features.push(version.into());
        }
    }
    if plain.has("cmdarg-key-fd") {
        features.push("cmdarg-keyfile-fd".into());
    }
    if plain.has("cmdarg-pwd-fd") {
        features.push("cmdarg-pwdfile-fd".into());
    }
    for always in [
        "tpm12-not-need-root",
        "cmdarg-write-ek-cert-files",
        "cmdarg-create-config-files",
        "cmdarg-reconfigure-pcr-banks",
    ] {
        features.push(always.into());
    }
    for bits in tpm2
        .rsa_key_sizes()
        .into_iter()
        .filter(|b| (2048..=3072).contains(b))
    {
        features.push(format!("tpm2-rsa-keysize-{bits}"));
    }
    let quoted: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "{{ \"type\": \"swtpm_setup\", \"features\": [ {} ], \"version\": \"{}\" }}",
        quoted.join(", "),
        super::VERSION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(features: &[&str]) -> Capabilities {
        Capabilities {
            features: features.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn debian_swtpm_gives_swtpm_setups_list() {
        let plain = caps(&["tpm-1.2", "tpm-2.0", "cmdarg-key-fd", "cmdarg-pwd-fd"]);
        let tpm2 = caps(&["rsa-keysize-1024", "rsa-keysize-2048", "rsa-keysize-3072"]);
        assert_eq!(
            line(&plain, &tpm2),
            format!(
                "{{ \"type\": \"swtpm_setup\", \"features\": [ \"tpm-1.2\", \"tpm-2.0\", \"cmdarg-keyfile-fd\", \"cmdarg-pwdfile-fd\", \"tpm12-not-need-root\", \"cmdarg-write-ek-cert-files\", \"cmdarg-create-config-files\", \"cmdarg-reconfigure-pcr-banks\", \"tpm2-rsa-keysize-2048\", \"tpm2-rsa-keysize-3072\" ], \"version\": \"{}\" }}",
                crate::setup::VERSION
            )
        );
    }

    #[test]
    fn no_key_fds_without_daemon_support() {
        let text = line(&caps(&["tpm-2.0"]), &caps(&["rsa-keysize-2048"]));
        assert!(!text.contains("cmdarg-keyfile-fd") && !text.contains("cmdarg-pwdfile-fd"));
        assert!(!text.contains("tpm-1.2"));
    }
}
