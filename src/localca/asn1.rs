//! The few DER building blocks certificates are made of. Certificates must come out in
//! an exact shape (extension order, criticality, string types, a deliberately odd TPM 1.2
//! subjectAltName), so they are assembled from these explicitly instead of through a
//! generic builder. Pure and infallible: every function takes bytes and returns bytes.

use const_oid::ObjectIdentifier;

pub const TAG_BOOLEAN: u8 = 0x01;
pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_BIT_STRING: u8 = 0x03;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_NULL: u8 = 0x05;
pub const TAG_OID: u8 = 0x06;
pub const TAG_UTF8_STRING: u8 = 0x0C;
pub const TAG_PRINTABLE_STRING: u8 = 0x13;
pub const TAG_UTC_TIME: u8 = 0x17;
pub const TAG_GENERALIZED_TIME: u8 = 0x18;
pub const TAG_SEQUENCE: u8 = 0x30;
pub const TAG_SET: u8 = 0x31;
/// `[0]` constructed, explicit: the certificate version.
pub const TAG_CONTEXT_0: u8 = 0xA0;
/// `[3]` constructed, explicit: the certificate extensions.
pub const TAG_CONTEXT_3: u8 = 0xA3;
/// `[4]` constructed: GeneralName directoryName.
pub const TAG_CONTEXT_4: u8 = 0xA4;

/// Tag, definite length (short or long form), content.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already encoded elements.
pub fn sequence(elements: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &elements.concat())
}

/// A SET of already encoded elements, in the order given (callers pass one element or
/// elements already in DER order).
pub fn set(elements: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SET, &elements.concat())
}

pub fn oid(oid: &ObjectIdentifier) -> Vec<u8> {
    tlv(TAG_OID, oid.as_bytes())
}

pub fn null() -> Vec<u8> {
    tlv(TAG_NULL, &[])
}

pub fn boolean_true() -> Vec<u8> {
    tlv(TAG_BOOLEAN, &[0xFF])
}

pub fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(TAG_OCTET_STRING, content)
}

/// A BIT STRING without unused bits.
pub fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(content.len() + 1);
    value.push(0);
    value.extend_from_slice(content);
    tlv(TAG_BIT_STRING, &value)
}

/// The minimal DER INTEGER for an unsigned big-endian magnitude.
pub fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let skip = magnitude.iter().take_while(|b| **b == 0).count();
    let digits = &magnitude[skip..];
    let mut value = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        value.push(0);
    }
    value.extend_from_slice(digits);
    tlv(TAG_INTEGER, &value)
}

pub fn small_integer(value: u64) -> Vec<u8> {
    unsigned_integer(&value.to_be_bytes())
}

pub fn utf8_string(text: &str) -> Vec<u8> {
    tlv(TAG_UTF8_STRING, text.as_bytes())
}

/// True if every character is in PrintableString's repertoire (X.680 §41.4).
pub fn is_printable(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                ' ' | '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '/' | ':' | '=' | '?'
            )
    })
}

/// PrintableString when the text allows it, else UTF8String (how GnuTLS encodes a DN
/// attribute given as text, which swtpm's certificates show).
pub fn directory_string(text: &str) -> Vec<u8> {
    if is_printable(text) {
        tlv(TAG_PRINTABLE_STRING, text.as_bytes())
    } else {
        utf8_string(text)
    }
}

/// One attribute as a single-valued RDN: `SET { SEQUENCE { type, value } }`.
pub fn rdn(attribute: &ObjectIdentifier, value: &[u8]) -> Vec<u8> {
    set(&[&sequence(&[&oid(attribute), value])])
}

/// `AlgorithmIdentifier` with the given parameters (already encoded; empty = absent).
pub fn algorithm(algorithm: &ObjectIdentifier, parameters: &[u8]) -> Vec<u8> {
    sequence(&[&oid(algorithm), parameters])
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }`.
pub fn extension(id: &ObjectIdentifier, critical: bool, value: &[u8]) -> Vec<u8> {
    let flag = if critical { boolean_true() } else { Vec::new() };
    sequence(&[&oid(id), &flag, &octet_string(value)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_short_and_long_forms() {
        assert_eq!(tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        assert_eq!(&tlv(0x04, &[0; 0x80])[..3], &[0x04, 0x81, 0x80]);
        assert_eq!(&tlv(0x04, &[0; 0x1234])[..4], &[0x04, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(small_integer(2), [0x02, 1, 2]);
        assert_eq!(small_integer(0), [0x02, 1, 0]);
        assert_eq!(small_integer(164), [0x02, 2, 0, 0xA4]);
        assert_eq!(unsigned_integer(&[0, 0, 0x7F]), [0x02, 1, 0x7F]);
        assert_eq!(unsigned_integer(&[]), [0x02, 1, 0]);
        let mut max = vec![0x02, 21, 0];
        max.extend_from_slice(&[0xFF; 20]);
        assert_eq!(unsigned_integer(&[0xFF; 20]), max);
    }

    #[test]
    fn printable_or_utf8() {
        assert_eq!(directory_string("test:1234")[0], TAG_PRINTABLE_STRING);
        assert_eq!(directory_string("vm_one_two")[0], TAG_UTF8_STRING);
        assert_eq!(directory_string("grüße")[0], TAG_UTF8_STRING);
    }
}
