//! Eight ASCII digits at a time (SWAR: one 64-bit word holds eight bytes). Card ids and
//! timestamps are runs of digits in every record, and a byte loop with a multiply per digit
//! was a visible share of parsing.

const ZEROS: u64 = 0x3030_3030_3030_3030;

/// The 8 bytes at `b[at..]` as a little-endian word (the first byte is the lowest).
#[inline]
pub(crate) fn word(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Bytes of `w` selected by `mask` (0xFF per byte) that are not ASCII digits: 0 if all are.
#[inline]
pub(crate) fn non_digits(w: u64, mask: u64) -> u64 {
    // A digit is 0x30..=0x39: high nibble 3, and adding 6 keeps the high nibble 3. A carry out
    // of a byte only happens for bytes >= 0xFA, which already fail the first test.
    let hi_nibbles = 0xF0F0_F0F0_F0F0_F0F0 & mask;
    ((w & hi_nibbles) ^ (ZEROS & hi_nibbles))
        | ((w.wrapping_add(0x0606_0606_0606_0606) & hi_nibbles) ^ (ZEROS & hi_nibbles))
}

/// The value of eight ASCII digits (already checked with [`non_digits`]), first byte most
/// significant (Lemire's multiply-shift reduction: pairs, then quads, then the whole).
#[inline]
pub(crate) fn value8(w: u64) -> u64 {
    let v = w.wrapping_sub(ZEROS);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    let mul1 = 100 + (1_000_000 << 32);
    let mul2 = 1 + (10_000 << 32);
    ((v & mask).wrapping_mul(mul1).wrapping_add(((v >> 16) & mask).wrapping_mul(mul2))) >> 32
}

/// Eight digits at `b[at..]`, or `None` if there are fewer than 8 bytes or one is not a digit.
#[inline]
pub(crate) fn parse8(b: &[u8], at: usize) -> Option<u64> {
    let w = word(b, at)?;
    if non_digits(w, u64::MAX) != 0 {
        return None;
    }
    Some(value8(w))
}

/// Four digits (first byte most significant), or `None` if one is not a digit.
#[inline]
pub(crate) fn parse4(b: &[u8; 4]) -> Option<u64> {
    let w = u32::from_le_bytes(*b) as u64;
    if non_digits(w, 0xFFFF_FFFF) != 0 {
        return None;
    }
    // Pairs (d0·10 + d1 in byte 0, d2·10 + d3 in byte 2), then the two pairs.
    let v = w.wrapping_sub(ZEROS & 0xFFFF_FFFF);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    Some((v & 0xFF) * 100 + ((v >> 16) & 0xFF))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(s: &[u8]) -> Option<u64> {
        s.iter().try_fold(0u64, |v, &c| c.is_ascii_digit().then(|| v * 10 + (c - b'0') as u64))
    }

    #[test]
    fn known_values() {
        assert_eq!(parse8(b"00000000", 0), Some(0));
        assert_eq!(parse8(b"12345678", 0), Some(12_345_678));
        assert_eq!(parse8(b"99999999", 0), Some(99_999_999));
        assert_eq!(parse8(b"x12345678", 1), Some(12_345_678));
        assert_eq!(parse8(b"1234567", 0), None);
        for bad in [b"1234567/", b"1234567:", b"/2345678", b"12\xff45678", b"1234 678"] {
            assert_eq!(parse8(bad, 0), None, "{:?}", bad);
        }
    }

    proptest! {
        #[test]
        fn four_agree_with_a_byte_loop(bytes in proptest::array::uniform4(prop_oneof![b'0'..=b'9', any::<u8>()])) {
            prop_assert_eq!(parse4(&bytes), naive(&bytes));
        }

        #[test]
        fn agrees_with_a_byte_loop(bytes in proptest::array::uniform8(prop_oneof![b'0'..=b'9', any::<u8>()])) {
            prop_assert_eq!(parse8(&bytes, 0), naive(&bytes));
        }
    }
}
