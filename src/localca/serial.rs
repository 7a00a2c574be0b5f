//! Certificate serial numbers as the local CA keeps them: the `certserial` file holds the
//! last serial issued, in decimal. Pure arithmetic on decimal strings, so that serials
//! of any length written by other swtpm_localca versions keep counting up.

/// RFC 5280 §4.1.2.2: serial numbers are at most 20 octets.
const MAX_SERIAL_BYTES: usize = 20;
/// swtpm_localca reads at most this many characters of the file.
const MAX_DIGITS: usize = 49;

/// The serial to issue after `last` (the file's content, if any). `fresh` makes a new
/// random start; it is used when there is no valid previous serial or when counting up
/// would no longer fit in 20 octets.
pub fn next_serial(last: Option<&str>, fresh: impl FnOnce() -> String) -> String {
    let Some(last) = last.map(str::trim) else {
        return fresh();
    };
    if last.is_empty() || last.len() > MAX_DIGITS || !last.bytes().all(|b| b.is_ascii_digit()) {
        return fresh();
    }
    let next = increment(last);
    if decimal_to_bytes(&next).len() > MAX_SERIAL_BYTES {
        return fresh();
    }
    next
}

/// A random 19-digit decimal start value below 9·10^18, so that serials from CAs
/// created at different times hardly ever collide (swtpm_localca ≥ 0.8 starts at a
/// random number too) while staying below 2^63: swtpm_cert 0.7.1 refuses serials of
/// 2^64 and more, and a CA directory may be shared with it.
pub fn random_start(random: [u8; 19]) -> String {
    random
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let digit = if i == 0 { 1 + b % 8 } else { b % 10 };
            char::from(b'0' + digit)
        })
        .collect()
}

fn increment(decimal: &str) -> String {
    let mut digits: Vec<u8> = decimal.bytes().map(|b| b - b'0').collect();
    for digit in digits.iter_mut().rev() {
        if *digit == 9 {
            *digit = 0;
        } else {
            *digit += 1;
            return strip(digits);
        }
    }
    digits.insert(0, 1);
    strip(digits)
}

fn strip(digits: Vec<u8>) -> String {
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    let trimmed = text.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// Big-endian magnitude of a decimal string of ASCII digits (other bytes count as 0).
pub fn decimal_to_bytes(decimal: &str) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for digit in decimal
        .bytes()
        .map(|b| u32::from(b.wrapping_sub(b'0') % 10))
    {
        let mut carry = digit;
        for byte in out.iter_mut().rev() {
            let value = u32::from(*byte) * 10 + carry;
            *byte = value as u8;
            carry = value >> 8;
        }
        while carry > 0 {
            out.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    let skip = out.iter().take_while(|b| **b == 0).count();
    out.drain(..skip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_from_the_file() {
        assert_eq!(next_serial(Some("4"), || unreachable!()), "5");
        assert_eq!(next_serial(Some("199"), || unreachable!()), "200");
        assert_eq!(next_serial(Some("0099\n"), || unreachable!()), "100");
    }

    #[test]
    fn starts_fresh_without_a_valid_file() {
        for bad in [
            None,
            Some(""),
            Some("x1"),
            Some("-1"),
            Some(&"9".repeat(50)[..]),
        ] {
            assert_eq!(next_serial(bad, || "7".into()), "7", "{bad:?}");
        }
        // 2^160 - 1 is the largest 20-octet serial; one more does not fit.
        let max = "1461501637330902918203684832716283019655932542975";
        assert_eq!(decimal_to_bytes(max), vec![0xFF; 20]);
        assert_eq!(next_serial(Some(max), || "7".into()), "7");
    }

    #[test]
    fn decimal_conversion() {
        assert_eq!(decimal_to_bytes("0"), Vec::<u8>::new());
        assert_eq!(decimal_to_bytes("2"), vec![2]);
        assert_eq!(decimal_to_bytes("256"), vec![1, 0]);
        assert_eq!(
            decimal_to_bytes("18446744073709551616"),
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn random_starts_stay_below_two_to_the_63() {
        assert_eq!(random_start([0; 19]), "1000000000000000000");
        let largest = random_start([0xFF; 19]);
        assert_eq!(largest.len(), 19);
        assert!(!largest.starts_with('0'));
        let largest = random_start([7, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(largest, "8999999999999999999");
        assert!(decimal_to_bytes(&largest) < decimal_to_bytes("9223372036854775808"));
    }
}
