//! `--print-capabilities` (cli.md §6): the single JSON line that libvirt and swtpm_setup
//! read to learn what this `swtpm` supports.

/// One entry of the feature list.
enum Feature {
    Name(&'static str),
    /// `rsa-keysize-<N>` for each key size libtpms offers, only with `--tpm2`.
    RsaKeySizes,
}

/// The features this build supports, in swtpm 0.10.2's order (cli.md §6 table). A feature
/// that later work adds goes in its place; the comments mark where each one belongs.
const FEATURES: &[Feature] = &[
    Feature::Name("tpm-1.2"),
    Feature::Name("tpm-2.0"),
    Feature::Name("tpm-send-command-header"),
    Feature::Name("flags-opt-startup"),
    Feature::Name("flags-opt-disable-auto-shutdown"),
    Feature::Name("ctrl-opt-terminate"),
    Feature::Name("cmdarg-seccomp"),
    Feature::Name("cmdarg-key-fd"),
    Feature::Name("cmdarg-pwd-fd"),
    Feature::Name("cmdarg-print-states"),
    Feature::Name("cmdarg-chroot"),
    Feature::Name("cmdarg-migration"),
    Feature::Name("nvram-backend-dir"),
    Feature::Name("nvram-backend-file"),
    Feature::RsaKeySizes,
    // "cmdarg-profile", "cmdarg-print-profiles", "profile-opt-remove-disabled" (TPM 2 only)
    // go here.
    Feature::Name("cmdarg-print-info"),
    Feature::Name("tpmstate-opt-lock"),
];

/// The capabilities line, without the trailing newline swtpm prints after it:
/// `{ "type": "swtpm", "features": [ "a", "b" ], "version": "X" }`.
/// `rsa_key_sizes` are libtpms' RSA key sizes for TPM 2; they are listed only when `tpm2`.
/// No `profiles` key: libtpms 0.9 has no profiles.
pub fn capabilities_json(tpm2: bool, rsa_key_sizes: &[u32], version: &str) -> String {
    let mut names = Vec::new();
    for feature in FEATURES {
        match feature {
            Feature::Name(name) => names.push((*name).to_owned()),
            Feature::RsaKeySizes if tpm2 => {
                names.extend(
                    rsa_key_sizes
                        .iter()
                        .map(|bits| format!("rsa-keysize-{bits}")),
                );
            }
            Feature::RsaKeySizes => {}
        }
    }
    let features: Vec<String> = names.iter().map(|name| json_string(name)).collect();
    format!(
        "{{ \"type\": \"swtpm\", \"features\": [ {} ], \"version\": {} }}",
        features.join(", "),
        json_string(version)
    )
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TPM12_LINE: &str = r#"{ "type": "swtpm", "features": [ "tpm-1.2", "tpm-2.0", "tpm-send-command-header", "flags-opt-startup", "flags-opt-disable-auto-shutdown", "ctrl-opt-terminate", "cmdarg-seccomp", "cmdarg-key-fd", "cmdarg-pwd-fd", "cmdarg-print-states", "cmdarg-chroot", "cmdarg-migration", "nvram-backend-dir", "nvram-backend-file", "cmdarg-print-info", "tpmstate-opt-lock" ], "version": "0.10.2" }"#;

    #[test]
    fn without_tpm2_there_are_no_rsa_key_sizes() {
        assert_eq!(
            capabilities_json(false, &[1024, 2048, 3072], "0.10.2"),
            TPM12_LINE
        );
    }

    #[test]
    fn with_tpm2_the_rsa_key_sizes_come_before_print_info() {
        let line = capabilities_json(true, &[1024, 2048, 3072], "0.10.2");
        assert_eq!(
            line,
            TPM12_LINE.replace(
                r#""nvram-backend-file", "#,
                r#""nvram-backend-file", "rsa-keysize-1024", "rsa-keysize-2048", "rsa-keysize-3072", "#
            )
        );
        assert_eq!(capabilities_json(true, &[], "0.10.2"), TPM12_LINE);
    }

    #[test]
    fn is_one_line_of_valid_json_in_swtpm_order() {
        let line = capabilities_json(true, &[2048], "1.0 \"beta\"\n");
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["type"], "swtpm");
        assert_eq!(parsed["version"], "1.0 \"beta\"\n");
        let features: Vec<&str> = parsed["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(features[..2], ["tpm-1.2", "tpm-2.0"]);
        assert_eq!(features.last(), Some(&"tpmstate-opt-lock"));
        assert!(features.contains(&"rsa-keysize-2048"));
        assert!(parsed.get("profiles").is_none());
    }

    #[test]
    fn matches_the_patterns_swtpms_tests_use() {
        // The upstream tests match the feature list literally, spacing included.
        let line = capabilities_json(false, &[], "0.1.0");
        assert!(line.starts_with(r#"{ "type": "swtpm", "features": [ "tpm-1.2", "#));
        assert!(line.ends_with(r#" ], "version": "0.1.0" }"#));
    }
}
