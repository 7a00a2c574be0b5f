//! The certificates the local CA issues, field by field as manufacturing.md §3 describes
//! swtpm's: TPM 2 and TPM 1.2 EK certificates and platform certificates, plus the CA's
//! own root and intermediate certificates. Pure: the caller supplies the time, the
//! serial number, the issuer's facts, and signs the returned to-be-signed bytes.

use const_oid::ObjectIdentifier;

use super::asn1::{self, TAG_CONTEXT_0, TAG_CONTEXT_3, TAG_CONTEXT_4};

pub mod oids {
    use const_oid::ObjectIdentifier as Oid;

    pub const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
    pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const SECP521R1: Oid = Oid::new_unwrap("1.3.132.0.35");

    pub const SUBJECT_DIRECTORY_ATTRIBUTES: Oid = Oid::new_unwrap("2.5.29.9");
    pub const SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
    pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
    pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub const AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
    pub const EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");

    pub const TCG_TPM_MANUFACTURER: Oid = Oid::new_unwrap("2.23.133.2.1");
    pub const TCG_TPM_MODEL: Oid = Oid::new_unwrap("2.23.133.2.2");
    pub const TCG_TPM_VERSION: Oid = Oid::new_unwrap("2.23.133.2.3");
    /// TPM 1.2 platform certificates still use these older platform attribute types.
    pub const TCG_PLATFORM_MANUFACTURER_12: Oid = Oid::new_unwrap("2.23.133.2.4");
    pub const TCG_PLATFORM_MODEL_12: Oid = Oid::new_unwrap("2.23.133.2.5");
    pub const TCG_PLATFORM_VERSION_12: Oid = Oid::new_unwrap("2.23.133.2.6");
    pub const TCG_TPM_SPECIFICATION: Oid = Oid::new_unwrap("2.23.133.2.16");
    pub const TCG_PLATFORM_MANUFACTURER_STR: Oid = Oid::new_unwrap("2.23.133.5.1.1");
    pub const TCG_PLATFORM_MODEL: Oid = Oid::new_unwrap("2.23.133.5.1.4");
    pub const TCG_PLATFORM_VERSION: Oid = Oid::new_unwrap("2.23.133.5.1.5");
    pub const TCG_KP_EK_CERTIFICATE: Oid = Oid::new_unwrap("2.23.133.8.1");
    pub const TCG_KP_PLATFORM_CERTIFICATE: Oid = Oid::new_unwrap("2.23.133.8.2");
}

/// NIST curves an EK may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EccCurve {
    P256,
    P384,
    P521,
}

impl EccCurve {
    /// The names swtpm_setup and swtpm_localca use (`id=secp384r1`).
    pub fn from_name(name: &str) -> Option<EccCurve> {
        match name {
            "secp256r1" => Some(EccCurve::P256),
            "secp384r1" => Some(EccCurve::P384),
            "secp521r1" => Some(EccCurve::P521),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EccCurve::P256 => "secp256r1",
            EccCurve::P384 => "secp384r1",
            EccCurve::P521 => "secp521r1",
        }
    }

    /// Bytes of one coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            EccCurve::P256 => 32,
            EccCurve::P384 => 48,
            EccCurve::P521 => 66,
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            EccCurve::P256 => oids::SECP256R1,
            EccCurve::P384 => oids::SECP384R1,
            EccCurve::P521 => oids::SECP521R1,
        }
    }
}

/// The public key a certificate is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// Big-endian modulus and public exponent.
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// Big-endian affine coordinates (shorter ones are left-padded).
    Ecc {
        curve: EccCurve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("the ECC coordinates are longer than {curve}'s {len} bytes")]
    CoordinateTooLong { curve: &'static str, len: usize },
    #[error("the RSA modulus is empty")]
    EmptyModulus,
    #[error("the RSA public exponent must not be 0")]
    ZeroExponent,
}

impl PublicKey {
    /// The DER SubjectPublicKeyInfo: rsaEncryption with NULL parameters, or
    /// id-ecPublicKey with the named curve and an uncompressed point.
    pub fn subject_public_key_info(&self) -> Result<Vec<u8>, ProfileError> {
        match self {
            PublicKey::Rsa { modulus, exponent } => {
                if modulus.iter().all(|b| *b == 0) {
                    return Err(ProfileError::EmptyModulus);
                }
                if *exponent == 0 {
                    return Err(ProfileError::ZeroExponent);
                }
                let rsa_public_key = asn1::sequence(&[
                    &asn1::unsigned_integer(modulus),
                    &asn1::small_integer(u64::from(*exponent)),
                ]);
                Ok(asn1::sequence(&[
                    &asn1::algorithm(&oids::RSA_ENCRYPTION, &asn1::null()),
                    &asn1::bit_string(&rsa_public_key),
                ]))
            }
            PublicKey::Ecc { curve, x, y } => {
                let len = curve.coordinate_len();
                let mut point = vec![0x04];
                for coordinate in [x, y] {
                    let digits = strip_leading_zeros(coordinate);
                    if digits.len() > len {
                        return Err(ProfileError::CoordinateTooLong {
                            curve: curve.name(),
                            len,
                        });
                    }
                    point.resize(point.len() + len - digits.len(), 0);
                    point.extend_from_slice(digits);
                }
                Ok(asn1::sequence(&[
                    &asn1::algorithm(&oids::EC_PUBLIC_KEY, &asn1::oid(&curve.oid())),
                    &asn1::bit_string(&point),
                ]))
            }
        }
    }

    fn is_rsa(&self) -> bool {
        matches!(self, PublicKey::Rsa { .. })
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[skip..]
}

/// Which TPM the certificate is for: the profile differs (subject, hash, SAN layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpmGeneration {
    Tpm12,
    Tpm2,
}

/// The TPM's identity in the subjectAltName (`--tpm-manufacturer/-model/-version`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmIdentity {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
}

/// The TPM specification in the subjectDirectoryAttributes (`--tpm-spec-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmSpecification {
    pub family: String,
    pub level: u32,
    pub revision: u32,
}

/// The platform in a platform certificate (`--platform-manufacturer/-model/-version`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformIdentity {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateKind {
    Ek {
        specification: TpmSpecification,
        /// The EK may sign (`--allow-signing`), and with it also decrypt (`--decryption`).
        allow_signing: bool,
        decryption: bool,
    },
    Platform(PlatformIdentity),
}

/// What the issuing CA contributes to a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerFacts {
    /// The issuer certificate's subject Name, DER, copied byte for byte.
    pub name: Vec<u8>,
    /// The issuer certificate's subjectKeyIdentifier, copied into the AKI.
    pub key_identifier: Vec<u8>,
}

/// Validity as seconds since the Unix epoch; `not_after: None` means "no well-defined
/// expiration" (99991231235959Z, RFC 5280 §4.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: Option<i64>,
}

/// Everything about one TPM certificate except its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmCertificateRequest {
    pub generation: TpmGeneration,
    pub kind: CertificateKind,
    pub key: PublicKey,
    /// The subject's common name (TPM 2 only; TPM 1.2 certificates have an empty subject).
    pub common_name: String,
    pub tpm: TpmIdentity,
    /// Big-endian serial number magnitude.
    pub serial: Vec<u8>,
    pub validity: Validity,
}

/// The signature algorithm (RSA PKCS#1 v1.5) a certificate is signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    Sha1WithRsa,
    Sha256WithRsa,
}

impl SignatureAlgorithm {
    pub fn algorithm_identifier(self) -> Vec<u8> {
        let id = match self {
            SignatureAlgorithm::Sha1WithRsa => oids::SHA1_WITH_RSA,
            SignatureAlgorithm::Sha256WithRsa => oids::SHA256_WITH_RSA,
        };
        asn1::algorithm(&id, &asn1::null())
    }
}

impl TpmCertificateRequest {
    /// TPM 1.2 certificates are signed with SHA-1, TPM 2 ones with SHA-256.
    pub fn signature_algorithm(&self) -> SignatureAlgorithm {
        match self.generation {
            TpmGeneration::Tpm12 => SignatureAlgorithm::Sha1WithRsa,
            TpmGeneration::Tpm2 => SignatureAlgorithm::Sha256WithRsa,
        }
    }

    /// The DER TBSCertificate.
    pub fn to_be_signed(&self, issuer: &IssuerFacts) -> Result<Vec<u8>, ProfileError> {
        let subject = match self.generation {
            TpmGeneration::Tpm2 => common_name(&self.common_name),
            TpmGeneration::Tpm12 => asn1::sequence(&[]),
        };
        let extensions = match &self.kind {
            CertificateKind::Ek {
                specification,
                allow_signing,
                decryption,
            } => vec![
                asn1::extension(
                    &oids::EXTENDED_KEY_USAGE,
                    false,
                    &asn1::sequence(&[&asn1::oid(&oids::TCG_KP_EK_CERTIFICATE)]),
                ),
                asn1::extension(&oids::SUBJECT_ALT_NAME, true, &self.ek_subject_alt_name()),
                end_entity_basic_constraints(),
                asn1::extension(
                    &oids::SUBJECT_DIRECTORY_ATTRIBUTES,
                    false,
                    &tpm_specification_attribute(specification),
                ),
                authority_key_identifier(issuer),
                self.key_usage(*allow_signing, *decryption),
            ],
            CertificateKind::Platform(platform) => vec![
                asn1::extension(
                    &oids::SUBJECT_ALT_NAME,
                    true,
                    &self.platform_subject_alt_name(platform),
                ),
                end_entity_basic_constraints(),
                authority_key_identifier(issuer),
                self.key_usage(false, false),
                asn1::extension(
                    &oids::EXTENDED_KEY_USAGE,
                    false,
                    &asn1::sequence(&[&asn1::oid(&oids::TCG_KP_PLATFORM_CERTIFICATE)]),
                ),
            ],
        };
        let extensions: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();
        Ok(asn1::sequence(&[
            &asn1::tlv(TAG_CONTEXT_0, &asn1::small_integer(2)),
            &asn1::unsigned_integer(&self.serial),
            &self.signature_algorithm().algorithm_identifier(),
            &issuer.name,
            &validity(self.validity),
            &subject,
            &self.key.subject_public_key_info()?,
            &asn1::tlv(TAG_CONTEXT_3, &asn1::sequence(&extensions)),
        ]))
    }

    fn tpm_rdns(&self) -> Vec<u8> {
        [
            asn1::rdn(
                &oids::TCG_TPM_MANUFACTURER,
                &asn1::utf8_string(&self.tpm.manufacturer),
            ),
            asn1::rdn(&oids::TCG_TPM_MODEL, &asn1::utf8_string(&self.tpm.model)),
            asn1::rdn(
                &oids::TCG_TPM_VERSION,
                &asn1::utf8_string(&self.tpm.version),
            ),
        ]
        .concat()
    }

    /// GeneralNames { directoryName { TPM manufacturer, model, version } }.
    fn ek_subject_alt_name(&self) -> Vec<u8> {
        let name = asn1::tlv(asn1::TAG_SEQUENCE, &self.tpm_rdns());
        asn1::sequence(&[&asn1::tlv(TAG_CONTEXT_4, &name)])
    }

    /// TPM 2: the platform's three attributes as a Name. TPM 1.2: a SEQUENCE holding the
    /// TPM's and the platform's attribute blocks, as swtpm's TPM 1.2 platform
    /// certificates have it (not a well-formed Name, but what verifiers of such
    /// certificates have seen for years).
    fn platform_subject_alt_name(&self, platform: &PlatformIdentity) -> Vec<u8> {
        let directory = match self.generation {
            TpmGeneration::Tpm2 => asn1::tlv(
                asn1::TAG_SEQUENCE,
                &[
                    asn1::rdn(
                        &oids::TCG_PLATFORM_MANUFACTURER_STR,
                        &asn1::utf8_string(&platform.manufacturer),
                    ),
                    asn1::rdn(
                        &oids::TCG_PLATFORM_MODEL,
                        &asn1::utf8_string(&platform.model),
                    ),
                    asn1::rdn(
                        &oids::TCG_PLATFORM_VERSION,
                        &asn1::utf8_string(&platform.version),
                    ),
                ]
                .concat(),
            ),
            TpmGeneration::Tpm12 => {
                let tpm = asn1::tlv(asn1::TAG_SEQUENCE, &self.tpm_rdns());
                let platform = asn1::tlv(
                    asn1::TAG_SEQUENCE,
                    &[
                        asn1::rdn(
                            &oids::TCG_PLATFORM_MANUFACTURER_12,
                            &asn1::utf8_string(&platform.manufacturer),
                        ),
                        asn1::rdn(
                            &oids::TCG_PLATFORM_MODEL_12,
                            &asn1::utf8_string(&platform.model),
                        ),
                        asn1::rdn(
                            &oids::TCG_PLATFORM_VERSION_12,
                            &asn1::utf8_string(&platform.version),
                        ),
                    ]
                    .concat(),
                );
                asn1::sequence(&[&tpm, &platform])
            }
        };
        asn1::sequence(&[&asn1::tlv(TAG_CONTEXT_4, &directory)])
    }

    /// keyUsage per manufacturing.md §3.6: an RSA EK encrypts keys, an ECC EK agrees on
    /// them, a signing EK also signs; TPM 1.2 EKs only ever encrypt.
    fn key_usage(&self, allow_signing: bool, decryption: bool) -> Vec<u8> {
        const DIGITAL_SIGNATURE: u16 = 0x80;
        const KEY_ENCIPHERMENT: u16 = 0x20;
        const KEY_AGREEMENT: u16 = 0x08;
        let signing = allow_signing && self.generation == TpmGeneration::Tpm2;
        let encrypting = !signing || decryption;
        let mut bits = 0u16;
        if signing {
            bits |= DIGITAL_SIGNATURE;
        }
        if encrypting {
            bits |= if self.key.is_rsa() || self.generation == TpmGeneration::Tpm12 {
                KEY_ENCIPHERMENT
            } else {
                KEY_AGREEMENT
            };
        }
        asn1::extension(&oids::KEY_USAGE, true, &key_usage_bits(bits as u8))
    }
}

/// `Name` with one CN attribute.
pub fn common_name(text: &str) -> Vec<u8> {
    asn1::sequence(&[&asn1::rdn(
        &oids::COMMON_NAME,
        &asn1::directory_string(text),
    )])
}

/// A KeyUsage BIT STRING with the DER-minimal number of unused bits.
fn key_usage_bits(bits: u8) -> Vec<u8> {
    let unused = if bits == 0 {
        0
    } else {
        bits.trailing_zeros() as u8
    };
    asn1::tlv(asn1::TAG_BIT_STRING, &[unused, bits])
}

fn end_entity_basic_constraints() -> Vec<u8> {
    asn1::extension(&oids::BASIC_CONSTRAINTS, true, &asn1::sequence(&[]))
}

fn authority_key_identifier(issuer: &IssuerFacts) -> Vec<u8> {
    // keyIdentifier [0] IMPLICIT OCTET STRING
    let key_id = asn1::tlv(0x80, &issuer.key_identifier);
    asn1::extension(
        &oids::AUTHORITY_KEY_IDENTIFIER,
        false,
        &asn1::sequence(&[&key_id]),
    )
}

/// SEQUENCE OF Attribute { tcg-at-tpmSpecification, SET { { family, level, revision } } }.
fn tpm_specification_attribute(spec: &TpmSpecification) -> Vec<u8> {
    let value = asn1::sequence(&[
        &asn1::utf8_string(&spec.family),
        &asn1::small_integer(u64::from(spec.level)),
        &asn1::small_integer(u64::from(spec.revision)),
    ]);
    let attribute = asn1::sequence(&[
        &asn1::oid(&oids::TCG_TPM_SPECIFICATION),
        &asn1::set(&[&value]),
    ]);
    asn1::sequence(&[&attribute])
}

/// Validity with UTCTime up to 2049 and GeneralizedTime after (RFC 5280 §4.1.2.5).
fn validity(validity: Validity) -> Vec<u8> {
    let not_after = match validity.not_after {
        Some(seconds) => time(seconds),
        None => asn1::tlv(asn1::TAG_GENERALIZED_TIME, b"99991231235959Z"),
    };
    asn1::sequence(&[&time(validity.not_before), &not_after])
}

fn time(unix_seconds: i64) -> Vec<u8> {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let clock = format!(
        "{month:02}{day:02}{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if (1950..2050).contains(&year) {
        asn1::tlv(
            asn1::TAG_UTC_TIME,
            format!("{:02}{clock}", year % 100).as_bytes(),
        )
    } else {
        let year = year.clamp(0, 9999);
        asn1::tlv(
            asn1::TAG_GENERALIZED_TIME,
            format!("{year:04}{clock}").as_bytes(),
        )
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A CA certificate (the local CA's root or intermediate): basicConstraints CA:TRUE,
/// keyUsage keyCertSign, SKI, and an AKI when `issuer` is another CA.
pub struct CaCertificateRequest<'a> {
    pub subject_common_name: &'a str,
    pub issuer: Option<&'a IssuerFacts>,
    pub serial: &'a [u8],
    pub validity: Validity,
    /// DER SubjectPublicKeyInfo of the CA's key.
    pub subject_public_key_info: &'a [u8],
    pub subject_key_identifier: &'a [u8],
}

impl CaCertificateRequest<'_> {
    pub fn to_be_signed(&self) -> Vec<u8> {
        let subject = common_name(self.subject_common_name);
        let issuer_name = self
            .issuer
            .map_or(subject.clone(), |issuer| issuer.name.clone());
        let mut extensions = vec![
            asn1::extension(
                &oids::BASIC_CONSTRAINTS,
                true,
                &asn1::sequence(&[&asn1::boolean_true()]),
            ),
            asn1::extension(&oids::KEY_USAGE, true, &key_usage_bits(0x04)),
            asn1::extension(
                &oids::SUBJECT_KEY_IDENTIFIER,
                false,
                &asn1::octet_string(self.subject_key_identifier),
            ),
        ];
        if let Some(issuer) = self.issuer {
            extensions.push(authority_key_identifier(issuer));
        }
        let extensions: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();
        asn1::sequence(&[
            &asn1::tlv(TAG_CONTEXT_0, &asn1::small_integer(2)),
            &asn1::unsigned_integer(self.serial),
            &SignatureAlgorithm::Sha256WithRsa.algorithm_identifier(),
            &issuer_name,
            &validity(self.validity),
            &subject,
            self.subject_public_key_info,
            &asn1::tlv(TAG_CONTEXT_3, &asn1::sequence(&extensions)),
        ])
    }
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`.
pub fn certificate(tbs: &[u8], algorithm: SignatureAlgorithm, signature: &[u8]) -> Vec<u8> {
    asn1::sequence(&[
        tbs,
        &algorithm.algorithm_identifier(),
        &asn1::bit_string(signature),
    ])
}

/// The TCG header TPM 1.2 certificates carry in NV (manufacturing.md §3.7):
/// PCCLIENT_STORED_CERT tag, certType 0, size, PCCLIENT_FULL_CERT tag, DER.
pub fn tpm12_nv_blob(der: &[u8]) -> Option<Vec<u8>> {
    let size = u16::try_from(der.len() + 2).ok()?;
    let mut out = vec![0x10, 0x01, 0x00];
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&[0x10, 0x02]);
    out.extend_from_slice(der);
    Some(out)
}

/// The DER inside a TPM 1.2 NV certificate blob, if it has the TCG header.
pub fn strip_tpm12_header(blob: &[u8]) -> Option<&[u8]> {
    match blob {
        [0x10, 0x01, 0x00, hi, lo, 0x10, 0x02, der @ ..]
            if usize::from(u16::from_be_bytes([*hi, *lo])) == der.len() + 2 =>
        {
            Some(der)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn request(
        generation: TpmGeneration,
        kind: CertificateKind,
        key: PublicKey,
    ) -> TpmCertificateRequest {
        TpmCertificateRequest {
            generation,
            kind,
            key,
            common_name: "test:1234".into(),
            tpm: TpmIdentity {
                manufacturer: "id:00001014".into(),
                model: "swtpm".into(),
                version: "id:20191023".into(),
            },
            serial: vec![2],
            validity: Validity {
                not_before: 1_795_000_000,
                not_after: None,
            },
        }
    }

    fn ek(allow_signing: bool, decryption: bool) -> CertificateKind {
        CertificateKind::Ek {
            specification: TpmSpecification {
                family: "2.0".into(),
                level: 0,
                revision: 164,
            },
            allow_signing,
            decryption,
        }
    }

    fn issuer() -> IssuerFacts {
        IssuerFacts {
            name: common_name("swtpm-localca"),
            key_identifier: vec![0x35; 20],
        }
    }

    fn rsa() -> PublicKey {
        PublicKey::Rsa {
            modulus: vec![0xC1; 256],
            exponent: 65537,
        }
    }

    fn ecc() -> PublicKey {
        PublicKey::Ecc {
            curve: EccCurve::P384,
            x: vec![1; 48],
            y: vec![2; 47],
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn ek_extensions_carry_the_observed_bytes() {
        let tbs = request(TpmGeneration::Tpm2, ek(false, false), rsa())
            .to_be_signed(&issuer())
            .unwrap();
        // SAN (critical) with the TPM attributes, from manufacturing.md §3.4.
        assert!(contains(&tbs, &hex("0603551D110101FF044830")));
        assert!(contains(
            &tbs,
            &hex(
                "3046A444304231163014060567810502010C0B69643A30303030313031343110300E060567810502020C05737774706D31163014060567810502030C0B69643A3230313931303233"
            )
        ));
        // SDA, §3.5.
        assert!(contains(
            &tbs,
            &hex("301930170605678105021031 0E300C0C03322E30020100020200A4")
        ));
        // EKU first, keyUsage keyEncipherment last.
        assert!(contains(&tbs, &hex("300706056781050801")));
        assert!(tbs.ends_with(&hex("300E0603551D0F0101FF040403020520")));
        // Subject CN=test:1234 as PrintableString.
        assert!(contains(
            &tbs,
            &hex("311230100603550403130974657374 3A31323334")
        ));
        assert!(contains(&tbs, b"\x18\x0f99991231235959Z"));
    }

    #[test]
    fn key_usage_follows_key_type_and_flags() {
        let last = |key: PublicKey, signing: bool, decryption: bool| {
            let tbs = request(TpmGeneration::Tpm2, ek(signing, decryption), key)
                .to_be_signed(&issuer())
                .unwrap();
            tbs[tbs.len() - 4..].to_vec()
        };
        assert_eq!(last(rsa(), false, false), hex("03020520"));
        assert_eq!(last(rsa(), false, true), hex("03020520"));
        assert_eq!(last(rsa(), true, false), hex("03020780"));
        assert_eq!(last(rsa(), true, true), hex("030205A0"));
        assert_eq!(last(ecc(), false, false), hex("03020308"));
        assert_eq!(last(ecc(), true, false), hex("03020780"));
        assert_eq!(last(ecc(), true, true), hex("03020388"));
    }

    #[test]
    fn ecc_points_are_padded_and_uncompressed() {
        let spki = ecc().subject_public_key_info().unwrap();
        assert!(spki.ends_with(&[&[0x00, 0x04][..], &[1; 48], &[0], &[2; 47]].concat()));
        assert!(contains(&spki, &hex("06052B81040022")));
        let too_long = PublicKey::Ecc {
            curve: EccCurve::P256,
            x: vec![1; 33],
            y: vec![1],
        };
        assert!(too_long.subject_public_key_info().is_err());
    }

    #[test]
    fn platform_certificate_puts_eku_last() {
        let platform = CertificateKind::Platform(PlatformIdentity {
            manufacturer: "Fedora".into(),
            model: "QEMU".into(),
            version: "2.1".into(),
        });
        let tbs = request(TpmGeneration::Tpm2, platform, rsa())
            .to_be_signed(&issuer())
            .unwrap();
        assert!(contains(
            &tbs,
            &hex(
                "303BA4393037311230100606678105050101 0C064665646F7261 3110300E060667810505010 40C0451454D55310F300D060667810505010 50C03322E31"
            )
        ));
        assert!(tbs.ends_with(&hex("301006035 51D25040930070605678105 0802")));
    }

    #[test]
    fn tpm12_certificates_have_an_empty_subject_and_sha1() {
        let mut req = request(TpmGeneration::Tpm12, ek(true, false), rsa());
        req.tpm.version = "id:00740001".into();
        let tbs = req.to_be_signed(&issuer()).unwrap();
        assert!(contains(&tbs, &hex("06092A864886F70D0101050500")));
        assert!(!contains(&tbs, b"test:1234"));
        assert!(tbs.ends_with(&hex("03020520")), "TPM 1.2 EKs only encrypt");
    }

    #[test]
    fn times() {
        assert_eq!(time(0), asn1::tlv(asn1::TAG_UTC_TIME, b"700101000000Z"));
        assert_eq!(
            time(1_795_000_000),
            asn1::tlv(asn1::TAG_UTC_TIME, b"261118110640Z")
        );
        assert_eq!(
            time(2_524_608_000),
            asn1::tlv(asn1::TAG_GENERALIZED_TIME, b"20500101000000Z")
        );
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn tcg_header_round_trip() {
        let blob = tpm12_nv_blob(&[0x30, 0x00]).unwrap();
        assert_eq!(blob, [0x10, 1, 0, 0, 4, 0x10, 2, 0x30, 0]);
        assert_eq!(strip_tpm12_header(&blob), Some(&[0x30, 0][..]));
        assert_eq!(strip_tpm12_header(&blob[..8]), None);
        assert!(tpm12_nv_blob(&vec![0; 70_000]).is_none());
    }
}
