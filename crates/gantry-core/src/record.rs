//! The input records of contract §1, as parsed: text fields borrow from the message bytes
//! (`Cow::Borrowed`) unless the JSON had escapes to decode.

use std::borrow::Cow;
use std::fmt;

/// Longest card id the contract allows (`cpuCardId`: ≤ 20 digits).
pub const CARD_ID_DIGITS_MAX: usize = 20;

/// An ETC card number (≤ 20 decimal digits) packed into 9 bytes: the value (< 2^67) and the
/// digit count, so leading zeros survive and two ids are equal only if their text is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardId {
    lo: u64,
    /// bits 0..3: value >> 64; bits 3..8: number of digits.
    hi: u8,
}

impl CardId {
    /// `None` unless `s` is 1–20 ASCII digits.
    pub fn parse(s: &str) -> Option<CardId> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > CARD_ID_DIGITS_MAX {
            return None;
        }
        // Real ids have 16–20 digits: the first 16 go through two word-sized steps.
        if b.len() >= 16 {
            let (Some(hi), Some(lo)) = (crate::digits::parse8(b, 0), crate::digits::parse8(b, 8))
            else {
                return None;
            };
            // The last 0–4 digits (all 4 in the standard 20-digit id: one word step), then one
            // 128-bit multiply-add.
            let tail = match b.get(16..20) {
                Some(last) => crate::digits::parse4(last.try_into().expect("4 bytes"))?,
                None => {
                    let mut tail: u64 = 0;
                    for &c in &b[16..] {
                        let d = c.wrapping_sub(b'0');
                        if d > 9 {
                            return None;
                        }
                        tail = tail * 10 + d as u64;
                    }
                    tail
                }
            };
            const POW10: [u64; 5] = [1, 10, 100, 1_000, 10_000];
            let v = (hi * 100_000_000 + lo) as u128 * POW10[b.len() - 16] as u128 + tail as u128;
            return Some(CardId { lo: v as u64, hi: ((v >> 64) as u8) | ((b.len() as u8) << 3) });
        }
        // 19 digits fit in a u64; only a 20th needs the 128-bit step.
        let mut v: u64 = 0;
        for &c in &b[..b.len().min(19)] {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + d as u64;
        }
        let v = match b.get(19) {
            Some(&c) if c.is_ascii_digit() => v as u128 * 10 + (c - b'0') as u128,
            Some(_) => return None,
            None => v as u128,
        };
        Some(CardId { lo: v as u64, hi: ((v >> 64) as u8) | ((b.len() as u8) << 3) })
    }

    pub fn from_parts(lo: u64, hi: u8) -> CardId {
        CardId { lo, hi }
    }

    pub fn parts(self) -> (u64, u8) {
        (self.lo, self.hi)
    }

    fn value(self) -> u128 {
        ((self.hi as u128 & 7) << 64) | self.lo as u128
    }

    pub fn digits(self) -> usize {
        (self.hi >> 3) as usize
    }

    /// Writes the id's digits into `buf` and returns them as text.
    pub fn write_to(self, buf: &mut [u8; CARD_ID_DIGITS_MAX]) -> &str {
        let n = self.digits();
        // 128-bit division is a library call; only the top digit or two of a 20-digit id
        // need it, the rest is 64-bit arithmetic.
        const TEN19: u128 = 10_000_000_000_000_000_000;
        let v = self.value();
        let (top, mut low) =
            if v >= TEN19 { ((v / TEN19) as u64, (v % TEN19) as u64) } else { (0, v as u64) };
        for (k, i) in (0..n).rev().enumerate() {
            buf[i] = b'0' + if k < 19 { (low % 10) as u8 } else { top as u8 };
            low /= 10;
        }
        // Only ASCII digits were written.
        std::str::from_utf8(&buf[..n]).expect("digits are ASCII")
    }

    /// The issuer network id: the card's first 4 digits (fewer if the id is shorter).
    pub fn issuer_id(self, buf: &mut [u8; CARD_ID_DIGITS_MAX]) -> &str {
        let s = self.write_to(buf);
        &s[..s.len().min(4)]
    }
}

impl fmt::Display for CardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; CARD_ID_DIGITS_MAX];
        f.write_str(self.write_to(&mut buf))
    }
}

impl fmt::Debug for CardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardId({self})")
    }
}

/// `mediaType`: how the vehicle paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MediaType {
    /// OBU with an ETC card: priced with the ETC discount and debited.
    Etc = 1,
    /// CPC card of a non-ETC vehicle: priced, never debited.
    Cpc = 2,
}

/// Vehicle classes of JT/T 489-2019 in the order of the tariff's fee columns.
pub const VEHICLE_TYPES: [u8; 16] = [1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 21, 22, 23, 24, 25, 26];

/// Column index of a vehicle class in a tariff row, `None` for a class the standard lacks.
#[inline]
pub fn vehicle_type_index(t: u8) -> Option<usize> {
    match t {
        1..=4 => Some(t as usize - 1),
        11..=16 => Some(t as usize - 7),
        21..=26 => Some(t as usize - 11),
        _ => None,
    }
}

/// A lane transaction (门架交易), contract §1.1.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneTx<'a> {
    pub trade_id: Cow<'a, str>,
    pub gantry_id: Cow<'a, str>,
    /// One or more tolling units joined with `|`, each non-empty.
    pub toll_interval_id: Cow<'a, str>,
    /// How many units `toll_interval_id` holds (the parser counts them anyway), so the
    /// one-unit records that are nearly all traffic are not searched for a `|` again.
    pub unit_count: u8,
    /// `transTime` as epoch milliseconds.
    pub trans_time_ms: i64,
    pub media_type: MediaType,
    /// Present whenever `media_type` is [`MediaType::Etc`].
    pub card_id: Option<CardId>,
    /// `cpuCardId` as written (ASCII digits: it parsed as `card_id`), so rows copy the text
    /// instead of formatting the number back into digits.
    pub card_text: Option<Cow<'a, str>>,
    pub obu_id: Option<Cow<'a, str>>,
    pub vehicle_plate: Option<Cow<'a, str>>,
    pub vehicle_type: u8,
    pub vehicle_class: u8,
    pub axle_count: Option<u8>,
    pub vehicle_seat: Option<u16>,
    pub pass_id: Option<Cow<'a, str>>,
    /// What the lane computed, in fen.
    pub lane_fee: Option<i64>,
}

impl LaneTx<'_> {
    /// The tolling units of `tollIntervalId`, in order.
    #[inline]
    pub fn intervals(&self) -> Intervals<'_> {
        if self.unit_count == 1 {
            Intervals { rest: None, last: Some(&self.toll_interval_id) }
        } else {
            Intervals::new(&self.toll_interval_id)
        }
    }
}

/// The `|`-separated units of a `tollIntervalId`. Nearly every record has one short unit, so
/// this is a plain byte loop (cheaper than `memchr`'s set-up on ~16 bytes) and a slice, not a
/// general `split` state machine.
pub struct Intervals<'a> {
    /// Still to be split.
    rest: Option<&'a str>,
    /// Known to be the last unit (no `|` in it): returned without a search.
    last: Option<&'a str>,
}

impl<'a> Intervals<'a> {
    pub fn new(toll_interval_id: &'a str) -> Self {
        Intervals { rest: Some(toll_interval_id), last: None }
    }
}

impl<'a> Iterator for Intervals<'a> {
    type Item = &'a str;

    // Always inlined: a call per unit (and one more for the end) was a tenth of pricing.
    #[inline(always)]
    fn next(&mut self) -> Option<&'a str> {
        if let Some(last) = self.last.take() {
            return Some(last);
        }
        let rest = self.rest?;
        match find_pipe(rest.as_bytes()) {
            Some(k) => {
                self.rest = Some(&rest[k + 1..]);
                Some(&rest[..k])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// The first `|` in `b`, eight bytes per step (a unit id is ~15 bytes: two steps).
#[inline]
pub(crate) fn find_pipe(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Bytes of `w` equal to `|` flagged in their high bit; the lowest flag is exact (a borrow
    // can only flag bytes above a true match).
    let pipes = |w: u64| {
        let x = w ^ (ONES * b'|' as u64);
        x.wrapping_sub(ONES) & !x & (ONES << 7)
    };
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if b.len() < 8 {
        return b.iter().position(|&c| c == b'|');
    }
    let mut at = 0;
    while at + 8 <= b.len() {
        let m = pipes(word(at));
        if m != 0 {
            return Some(at + m.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    // The last, partial step as the word ending at the end (its first bytes were checked).
    let m = pipes(word(b.len() - 8));
    (m != 0).then(|| b.len() - 8 + m.trailing_zeros() as usize / 8)
}

/// `cardType` of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CardType {
    /// 储值卡: prepaid, may go into arrears.
    StoredValue = 22,
    /// 记账卡: postpaid, with a credit limit.
    Postpaid = 23,
}

/// A card's administrative status (contract §1.2 `status` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CardStatus {
    Active = 0,
    Lost = 1,
    Suspended = 2,
    Cancelled = 3,
}

impl CardStatus {
    pub fn name(self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Lost => "lost",
            CardStatus::Suspended => "suspended",
            CardStatus::Cancelled => "cancelled",
        }
    }

    pub fn from_u8(v: u8) -> Option<CardStatus> {
        Some(match v {
            0 => CardStatus::Active,
            1 => CardStatus::Lost,
            2 => CardStatus::Suspended,
            3 => CardStatus::Cancelled,
            _ => return None,
        })
    }
}

/// An account event, contract §1.2.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountEvent<'a> {
    pub card_id: CardId,
    pub time_ms: i64,
    pub kind: AccountEventKind<'a>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AccountEventKind<'a> {
    Open {
        customer_id: Cow<'a, str>,
        card_type: CardType,
        vehicle_type: u8,
        plate: Option<Cow<'a, str>>,
        balance: i64,
        /// Postpaid only; 0 for stored-value cards.
        credit_limit: i64,
    },
    Topup {
        topup_id: Cow<'a, str>,
        amount: i64,
        channel: Option<Cow<'a, str>>,
    },
    Adjust {
        adjust_id: Cow<'a, str>,
        amount: i64,
        reason: Cow<'a, str>,
        trade_id: Option<Cow<'a, str>>,
    },
    Status {
        status: CardStatus,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn find_pipe_is_position(b in proptest::collection::vec(prop_oneof![Just(b'|'), Just(b'}'), Just(b'|' ^ 0x80), any::<u8>(), Just(b'G')], 0..40)) {
            prop_assert_eq!(find_pipe(&b), b.iter().position(|&c| c == b'|'));
        }

        /// Every id of 1–20 digits reads back as itself (the 16-digit word steps and the
        /// last digits' multiply-add included).
        #[test]
        fn card_ids_round_trip_any(s in "[0-9]{1,20}") {
            prop_assert_eq!(CardId::parse(&s).expect("digits").to_string(), s);
        }
    }

    #[test]
    fn card_ids_round_trip() {
        for s in [
            "0",
            "3201",
            "00012",
            "32011820220000123456",
            "99999999999999999999",
            "18446744073709551616",
        ] {
            let c = CardId::parse(s).unwrap();
            assert_eq!(c.to_string(), s);
        }
        assert_ne!(CardId::parse("012"), CardId::parse("12"));
        for s in ["1234567890123456", "12345678901234567", "00000000000000000000"] {
            assert_eq!(CardId::parse(s).unwrap().to_string(), s);
        }
        for s in [
            "",
            "123456789012345678901",
            "12a",
            "-1",
            "1 ",
            "1234567890123456a",
            "123456789012345a7",
            "1234567a90123456789",
        ] {
            assert_eq!(CardId::parse(s), None, "{s:?}");
        }
        let mut buf = [0; CARD_ID_DIGITS_MAX];
        assert_eq!(CardId::parse("32011820220000123456").unwrap().issuer_id(&mut buf), "3201");
    }

    #[test]
    fn vehicle_type_columns() {
        for (i, t) in VEHICLE_TYPES.iter().enumerate() {
            assert_eq!(vehicle_type_index(*t), Some(i));
        }
        for t in [0, 5, 10, 17, 20, 27, 255] {
            assert_eq!(vehicle_type_index(t), None);
        }
    }
}
