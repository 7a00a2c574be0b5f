//! Numbers on the command lines of the tools, read the way C's `strtoul` reads them:
//! white space, an optional sign, digits in the given base, and whatever follows is left
//! over. swtpm_ioctl and swtpm_bios accept `-l 2x` and `--tcp :6546x` because of that;
//! callers decide whether left-over text is an error. Pure.

/// The base of a number: fixed, or detected from a `0x`/`0` prefix (`strtoul` base 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Radix {
    Decimal,
    Auto,
}

/// A number read from the start of a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leading<'a> {
    /// The value as `strtoul` returns it: saturated at `u64::MAX` on overflow, and a
    /// leading `-` negates it modulo 2^64 (so `-1` is `u64::MAX`).
    pub value: u64,
    pub negative: bool,
    pub overflow: bool,
    /// The text after the digits.
    pub rest: &'a str,
}

/// Reads the number at the start of `text`; `None` if there are no digits.
pub fn leading(text: &str, radix: Radix) -> Option<Leading<'_>> {
    let unsigned = text.trim_start_matches(is_c_space);
    let (negative, unsigned) = match unsigned.as_bytes().first() {
        Some(b'-') => (true, &unsigned[1..]),
        Some(b'+') => (false, &unsigned[1..]),
        _ => (false, unsigned),
    };
    let (base, digits) = match radix {
        Radix::Decimal => (10, unsigned),
        Radix::Auto => detect_base(unsigned),
    };
    let digits_len = digits
        .find(|c: char| !c.is_digit(base))
        .unwrap_or(digits.len());
    if digits_len == 0 {
        return None;
    }
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    for digit in digits[..digits_len]
        .chars()
        .filter_map(|c| c.to_digit(base))
    {
        match magnitude
            .checked_mul(u64::from(base))
            .and_then(|m| m.checked_add(u64::from(digit)))
        {
            Some(next) => magnitude = next,
            None => overflow = true,
        }
    }
    let value = match (overflow, negative) {
        (true, _) => u64::MAX,
        (false, true) => magnitude.wrapping_neg(),
        (false, false) => magnitude,
    };
    Some(Leading {
        value,
        negative,
        overflow,
        rest: &digits[digits_len..],
    })
}

/// `strtoul` base 0: `0x` followed by a hex digit is hexadecimal, a leading `0` octal.
/// A lone `0x` is the number 0 followed by `x`.
fn detect_base(text: &str) -> (u32, &str) {
    let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
    match hex {
        Some(digits) if digits.starts_with(|c: char| c.is_ascii_hexdigit()) => (16, digits),
        _ if text.starts_with('0') => (8, text),
        _ => (10, text),
    }
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, radix: Radix) -> Option<u64> {
        leading(text, radix).map(|n| n.value)
    }

    #[test]
    fn decimal_with_leftovers() {
        let n = leading(" +42x", Radix::Decimal).unwrap();
        assert_eq!(
            (n.value, n.negative, n.overflow, n.rest),
            (42, false, false, "x")
        );
        assert_eq!(value("0x10", Radix::Decimal), Some(0));
        assert_eq!(value("", Radix::Decimal), None);
        assert_eq!(value("x", Radix::Decimal), None);
        assert_eq!(value("-", Radix::Decimal), None);
        assert_eq!(value(" ", Radix::Decimal), None);
    }

    #[test]
    fn negative_wraps_and_overflow_saturates() {
        assert_eq!(value("-1", Radix::Decimal), Some(u64::MAX));
        assert_eq!(value("-2", Radix::Decimal), Some(u64::MAX - 1));
        let big = leading("99999999999999999999999", Radix::Decimal).unwrap();
        assert!(big.overflow);
        assert_eq!(big.value, u64::MAX);
        assert_eq!(
            value("18446744073709551615", Radix::Decimal),
            Some(u64::MAX)
        );
    }

    #[test]
    fn automatic_base() {
        assert_eq!(value("0x1F", Radix::Auto), Some(31));
        assert_eq!(value("010", Radix::Auto), Some(8));
        assert_eq!(
            value("09", Radix::Auto).map(|_| leading("09", Radix::Auto).unwrap().rest),
            Some("9")
        );
        let lone = leading("0x", Radix::Auto).unwrap();
        assert_eq!((lone.value, lone.rest), (0, "x"));
        assert_eq!(value("12", Radix::Auto), Some(12));
    }

    #[test]
    fn never_panics_on_odd_text() {
        for text in [
            "\u{e9}1", "1\u{e9}", "-\u{e9}", "0x\u{e9}", "+-1", "--1", "\0",
        ] {
            let _ = leading(text, Radix::Decimal);
            let _ = leading(text, Radix::Auto);
        }
    }
}
