//! The line-rate parser for lane transactions and account events (contract §1).
//!
//! A Kafka message value holds one JSON object or several separated by newlines. The parser
//! knows the records' fields and validates while it scans: text fields borrow from the
//! message (`Cow::Borrowed`) unless they contain escapes, numbers are read straight into
//! integers, and unknown fields are skipped without being built. Each object yields either a
//! record or a [`RejectReason`] together with the object's raw bytes; nothing in here panics
//! on any input (see the proptests at the bottom and in `tests/parse.rs`).
//!
//! After a syntax error the parser resumes at the next newline, so one broken record in a
//! lane's batch does not take the others with it.
//!
//! Three parts: `scan.rs`, the scanner (byte-level reads, where all of the parser's unsafe
//! reads live, and the canonical fast path over them); `walk.rs`, the general JSON walk;
//! `fields.rs`, the field rules of contract §1. This file is the entry points and the loop
//! over a message's objects.

mod fields;
mod scan;
mod walk;

use std::borrow::Cow;

use fields::*;
use scan::*;
use walk::*;

use crate::record::{AccountEvent, AccountEventKind, CardStatus, LaneTx};
use crate::reject::{Field, RejectReason};
use crate::time::{parse_timestamp_ms, DEFAULT_NETWORK_UTC_OFFSET_MIN};

/// Longest optional free-text field (obuId, plate, passId, channel, reason) in bytes: far
/// above any real value, low enough that a broken lane cannot make rows of megabytes.
pub const TEXT_FIELD_BYTES_MAX: usize = 256;
/// Longest tolling unit id in `tollIntervalId`, in bytes (real ids have 14–20).
pub const UNIT_ID_BYTES_MAX: usize = 64;
/// Most tolling units in one record. A gantry fills in the units it missed, which is a
/// handful in practice; 64 bounds the per-record split buffer.
pub const UNITS_PER_RECORD_MAX: usize = 64;
const _: () =
    assert!(UNITS_PER_RECORD_MAX <= u8::MAX as usize, "a record's unit count is kept in a u8");
const _: () = assert!(
    (UNIT_ID_BYTES_MAX + 1) * UNITS_PER_RECORD_MAX <= u16::MAX as usize,
    "a unit's place in tollIntervalId is kept in a u16"
);
/// Largest absolute money amount accepted in any field, in fen (10 billion yuan): keeps every
/// sum of amounts far from i64 overflow.
pub const AMOUNT_ABS_MAX_FEN: i64 = 1_000_000_000_000;
/// Nesting depth allowed inside unknown fields before the object is called malformed.
const SKIP_DEPTH_MAX: u32 = 64;

#[derive(Clone, Copy, Debug)]
pub struct ParseConfig {
    /// Offset of times written without one (the network's zone), minutes east of UTC.
    pub network_utc_offset_min: i32,
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig { network_utc_offset_min: DEFAULT_NETWORK_UTC_OFFSET_MIN }
    }
}

/// Calls `f(raw, result)` for every lane record in a message, in order. `raw` is the record's
/// own bytes (for the reject row). A message with no record at all yields one reject.
pub fn for_each_lane_record<'a>(
    msg: &'a [u8],
    cfg: &ParseConfig,
    mut f: impl FnMut(&'a [u8], Result<LaneTx<'a>, RejectReason>),
) {
    for_each_object(msg, &mut |c: &mut Cursor<'a>| parse_lane_object(c, cfg), &mut f)
}

/// Calls `f(raw, result)` for every account event in a message, in order.
pub fn for_each_account_event<'a>(
    msg: &'a [u8],
    cfg: &ParseConfig,
    mut f: impl FnMut(&'a [u8], Result<AccountEvent<'a>, RejectReason>),
) {
    for_each_object(msg, &mut |c: &mut Cursor<'a>| parse_account_object(c, cfg), &mut f)
}

/// Parses a single lane record (convenience for tools and tests): the first object only.
pub fn parse_lane_record<'a>(
    bytes: &'a [u8],
    cfg: &ParseConfig,
) -> Result<LaneTx<'a>, RejectReason> {
    let mut first = None;
    for_each_lane_record(bytes, cfg, |_, r| {
        if first.is_none() {
            first = Some(r)
        }
    });
    first.unwrap_or(Err(RejectReason::NotJson { at: 0 }))
}

/// How parsing one object ended: `Syntax` errors leave the cursor mid-object, so the caller
/// resumes at the next newline; `Record` errors come after a complete object.
enum ObjError {
    Syntax(RejectReason),
    Record(RejectReason),
}

type ObjResult<T> = Result<T, ObjError>;

fn for_each_object<'a, T>(
    msg: &'a [u8],
    parse: &mut dyn FnMut(&mut Cursor<'a>) -> ObjResult<T>,
    f: &mut dyn FnMut(&'a [u8], Result<T, RejectReason>),
) {
    // No up-front UTF-8 pass over the message: structure outside strings must be ASCII for
    // the scanner to accept it, and each string is validated as it is scanned (a no-op for
    // the ASCII strings that make up most of a record).
    let b = msg;
    let mut c = Cursor { b, i: 0 };
    let mut n = 0;
    loop {
        c.ws();
        if c.i >= b.len() {
            break;
        }
        n += 1;
        let start = c.i;
        match parse(&mut c) {
            Ok(rec) => f(&b[start..c.i], Ok(rec)),
            Err(ObjError::Record(e)) => f(&b[start..c.i], Err(e)),
            Err(ObjError::Syntax(e)) => {
                let from = c.i.max(start + 1).min(b.len());
                let end = memchr::memchr(b'\n', &b[from..]).map_or(b.len(), |k| from + k);
                let e = match e {
                    _ if std::str::from_utf8(&b[start..end]).is_err() => RejectReason::NotUtf8,
                    RejectReason::NotJson { at } => {
                        RejectReason::NotJson { at: at.saturating_sub(start as u32) }
                    }
                    e => e,
                };
                f(&b[start..end], Err(e));
                c.i = end;
            }
        }
    }
    if n == 0 {
        f(msg, Err(RejectReason::NotJson { at: 0 }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &[u8] = r#"{"tradeId":"G0015320030010102026111012000001","gantryId":"G001532003001010","tollIntervalId":"G0015320030010|G0015320030020","transTime":"2026-11-10T12:00:00","mediaType":1,"cpuCardId":"32011820220000123456","obuId":"3201A1B2C3D4","vehiclePlate":"苏A12345_0","vehicleType":1,"vehicleClass":0,"axleCount":2,"vehicleSeat":5,"passId":"P1","fee":589}"#.as_bytes();

    /// The lane slots a walk filled and where it stopped.
    type Walked<'a> = Option<(Slots<'a, 8, 6>, usize)>;

    fn both(b: &[u8]) -> (Walked<'_>, Walked<'_>) {
        let mut c = Cursor { b, i: 0 };
        let fast = scan_fields_canonical::<8, 6, 14>(&mut c, &LANE_KEYS).map(|s| (s, c.i));
        let mut c = Cursor { b, i: 0 };
        let general = scan_fields_general::<8, 6>(&mut c, &LANE_KEYS).ok().map(|s| (s, c.i));
        (fast, general)
    }

    #[test]
    fn canonical_path_takes_lane_records_and_leaves_the_rest() {
        let (fast, general) = both(GOOD);
        assert!(fast.is_some());
        assert_eq!(fast, general);
        // Absent optional fields are skipped in order.
        let short = br#"{"tradeId":"T1","gantryId":"G","tollIntervalId":"U","transTime":"2026-11-10T12:00:00","mediaType":2,"vehicleType":1}"#;
        let (fast, general) = both(short);
        assert!(fast.is_some());
        assert_eq!(fast, general);
        // A string reaching into a second 64-byte word, in a newline-separated message.
        let long = format!("{{\"tradeId\":\"{}\",\"gantryId\":\"G\"}}\n{{}}", "T".repeat(100));
        let (fast, general) = both(long.as_bytes());
        assert!(fast.is_some());
        assert_eq!(fast, general);
        // Whitespace, other orders, a first member other than the first key, unknown fields,
        // nulls and duplicates go the general way.
        for other in [
            &br#"{ "tradeId":"T1"}"#[..],
            br#"{"gantryId":"G","tradeId":"T1"}"#,
            br#"{"gantryId":"G"}"#,
            br#"{"fee":1}"#,
            br#"{"tradeId":"T1","x":1}"#,
            br#"{"tradeId":null}"#,
            br#"{"tradeId":"T1","tradeId":"T2"}"#,
            br#"{"tradeId":"T1","mediaType":1.5}"#,
            // Escapes, control characters and strings cut off by the end, too.
            br#"{"tradeId":"T\"1"}"#,
            b"{\"tradeId\":\"T\t1\"}",
            br#"{"tradeId":"T1"#,
            format!(r#"{{"tradeId":"{}\"x"}}"#, "T".repeat(40)).as_bytes(),
        ] {
            assert!(both(other).0.is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    /// The last bytes of a message are read from its last 16/24 bytes, shifted: objects ending
    /// at every distance from the end, and messages shorter than one read, agree with the
    /// general walk; every cut-off prefix is left to it.
    #[test]
    fn canonical_path_reads_the_end_of_the_message_exactly() {
        for cut in 0..GOOD.len() {
            let (fast, general) = both(&GOOD[..cut]);
            assert!(fast.is_none() && general.is_none(), "prefix of {cut} bytes");
        }
        for n in 0..40 {
            for last in [
                format!(r#""passId":"{}"}}"#, "P".repeat(n)),
                format!(r#""passId":"{}苏"}}"#, "P".repeat(n)),
                format!(r#""passId":"{}","fee":{}}}"#, "P".repeat(n), "9".repeat(n % 12 + 1)),
            ] {
                for first in [
                    r#"{"tradeId":"T1","#,
                    r#"{"tradeId":"","#,
                    r#"{"tradeId":"G0015320030010102026111012000001","gantryId":"G1","#,
                ] {
                    let msg = format!("{first}{last}");
                    let (fast, general) = both(msg.as_bytes());
                    assert!(fast.is_some(), "{msg}");
                    assert_eq!(fast, general, "{msg}");
                    // The same object with the next one after it takes the same path.
                    let two = format!("{msg}\n{msg}");
                    let (fast2, _) = both(two.as_bytes());
                    assert_eq!(fast, fast2, "{msg}");
                    // Without its closing brace, or with the string unclosed, it is left.
                    assert!(both(&msg.as_bytes()[..msg.len() - 1]).0.is_none(), "{msg}");
                }
            }
        }
        for msg in [
            &br#"{"tradeId":"","fee":1}"#[..],
            br#"{"tradeId":"","obuId":""}"#,
            br#"{"tradeId":"","obuId":"\u00e9"}"#,
            br#"{"tradeId":"","obuId":"ab"#,
            br#"{"tradeId":"","obuId":"a"#,
            b"{\"tradeId\":\"\",\"obuId\":\"\xE8\x8B\x8F\"}",
        ] {
            let (fast, general) = both(msg);
            if fast.is_some() {
                assert_eq!(fast, general, "{}", String::from_utf8_lossy(msg));
            } else {
                assert!(
                    msg.contains(&b'\\') || general.is_none(),
                    "{}",
                    String::from_utf8_lossy(msg)
                );
            }
        }
        assert!(
            both(br#"{"tradeId":"","fee":1}"#).0.is_some()
                && both(b"{\"tradeId\":\"\",\"obuId\":\"\xE8\x8B\x8F\"}").0.is_some()
        );
    }

    /// Integers read inline (one or two digits) and through `Cursor::integer` agree with the
    /// general walk, before a `,`, before the `}` and at the end of the message.
    #[test]
    fn canonical_path_reads_integers_as_the_general_walk() {
        let values = [
            "0",
            "5",
            "9",
            "10",
            "42",
            "99",
            "100",
            "255",
            "05",
            "00",
            "007",
            "-1",
            "-0",
            "1.5",
            "1e2",
            "2E1",
            "9.",
            "1-",
            "+1",
            "",
            "a1",
            "12345678901234567890",
        ];
        for v in values {
            for msg in [
                format!(r#"{{"tradeId":"T1","mediaType":{v},"vehicleType":1}}"#),
                format!(r#"{{"tradeId":"T1","vehicleType":{v}}}"#),
                format!(r#"{{"tradeId":"","vehicleSeat":{v}}}"#),
                format!(r#"{{"tradeId":"T1","axleCount":{v},"fee":{v}}}"#),
            ] {
                let (fast, general) = both(msg.as_bytes());
                // A JSON integer that fits an i64.
                let digits = v.strip_prefix('-').unwrap_or(v);
                let valid = !digits.is_empty()
                    && digits.bytes().all(|c| c.is_ascii_digit())
                    && (digits == "0" || !digits.starts_with('0'))
                    && v.parse::<i64>().is_ok();
                assert_eq!(fast.is_some(), valid, "{msg}");
                if let Some(fast) = fast {
                    assert_eq!(Some(fast), general, "{msg}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 50_000, ..ProptestConfig::default() })]

        /// The short-text UTF-8 check decides exactly as the standard library, on bytes
        /// biased towards lead, continuation and boundary bytes.
        #[test]
        fn utf8_check_agrees_with_std(b in proptest::collection::vec(prop_oneof![
            any::<u8>(),
            proptest::sample::select(vec![0x00u8, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]),
            Just(b'A'), Just(b'A'), Just(b'A'),
        ], 0..24)) {
            prop_assert_eq!(utf8_well_formed(&b), std::str::from_utf8(&b).is_ok());
        }
    }

    #[test]
    fn utf8_check_knows_the_edges() {
        for (s, ok) in [
            (&b"\xE8\x8B\x8FA12345"[..], true), // 苏A12345
            (b"\xC2\x80", true),
            (b"\xC1\xBF", false),         // overlong
            (b"\xE0\x9F\xBF", false),     // overlong
            (b"\xED\xA0\x80", false),     // surrogate
            (b"\xF4\x8F\xBF\xBF", true),  // U+10FFFF
            (b"\xF4\x90\x80\x80", false), // above U+10FFFF
            (b"\xE8\x8B", false),         // cut short
        ] {
            assert_eq!(utf8_well_formed(s), ok, "{s:?}");
            assert_eq!(std::str::from_utf8(s).is_ok(), ok, "{s:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Whenever the fast path takes an object, the general walk reads the same slots and
        /// stops at the same byte.
        #[test]
        fn canonical_path_agrees_with_the_general_walk(
            edits in proptest::collection::vec((0usize..GOOD.len(), prop_oneof![
                any::<u8>(), proptest::sample::select(b"{}[]\",:\\ 0123456789-.eEnul".to_vec())
            ], 0u8..3), 1..4),
        ) {
            let mut b = GOOD.to_vec();
            for (pos, byte, op) in edits {
                let pos = pos.min(b.len().saturating_sub(1));
                match op {
                    0 => b[pos] = byte,
                    1 => { b.remove(pos); }
                    _ => b.insert(pos, byte),
                }
            }
            let (fast, general) = both(&b);
            if fast.is_some() {
                prop_assert_eq!(fast, general);
            }
        }
    }
}
