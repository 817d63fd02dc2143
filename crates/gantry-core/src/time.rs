//! Timestamps as the lanes write them.
//!
//! `transTime` and account-event `time` are `YYYY-MM-DDTHH:MM:SS`, optionally with `.mmm`
//! milliseconds, optionally with an explicit offset (`Z`, `+08:00`, `-0500`). A time without
//! an offset is in the network's time zone (`network_utc_offset_min`, default +08:00).
//! Everything inside Gantry is epoch milliseconds (UTC); local dates and times of day are
//! derived with the same fixed offset, so results never depend on the host's time zone.

/// The network's time zone offset from UTC when no offset is written: China Standard Time.
pub const DEFAULT_NETWORK_UTC_OFFSET_MIN: i32 = 8 * 60;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub const fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

#[inline]
fn digits<const N: usize>(b: &[u8], at: usize) -> Option<u32> {
    let mut v = 0u32;
    for i in 0..N {
        let c = *b.get(at + i)?;
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// Years whose months [`MONTH_START_DAY`] holds: every year a lane clock can plausibly
/// write (and then some); other years take the general parser's arithmetic.
const TABLE_FIRST_YEAR: u32 = 1970;
const TABLE_YEARS: usize = 130;

/// Day number of the first day of each month of [`TABLE_FIRST_YEAR`] onwards, and of the
/// month after the last: a timestamp's day is a load instead of Hinnant's arithmetic, and
/// the month's length (the next entry minus this one) validates its day.
static MONTH_START_DAY: [i32; TABLE_YEARS * 12 + 1] = {
    let mut t = [0i32; TABLE_YEARS * 12 + 1];
    let mut k = 0;
    while k < t.len() {
        let (y, m) = (TABLE_FIRST_YEAR as i64 + (k / 12) as i64, (k % 12) as u32 + 1);
        t[k] = days_from_civil(y, m, 1) as i32;
        k += 1;
    }
    t
};

/// Parses a lane timestamp into epoch milliseconds. `None` if it is not one of the accepted
/// forms or names an impossible date or time.
#[inline]
pub fn parse_timestamp_ms(s: &str, default_offset_min: i32) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() == 19 {
        if let Some(ms) = canonical_local_ms(b, default_offset_min) {
            return Some(ms);
        }
    }
    parse_timestamp_general(b, default_offset_min)
}

/// The form nearly every lane writes, `YYYY-MM-DDTHH:MM:SS` in the network's zone, read with
/// three word loads. `None` means "not this form, or not valid": the general parser decides.
#[inline]
fn canonical_local_ms(b: &[u8], offset_min: i32) -> Option<i64> {
    use crate::digits::{non_digits, word};
    // "YYYY-MM-" | "DDTHH:MM" | (overlapping) "HH:MM:SS"; separators are checked as bytes,
    // digits with one mask per word.
    let (w0, w1, w2) = (word(b, 0)?, word(b, 8)?, word(b, 11)?);
    const SEP0: u64 = 0xFF00_00FF_0000_0000; // bytes 4 and 7: '-'
    const SEP1: u64 = 0x0000_FF00_00FF_0000; // bytes 2 and 5: 'T', ':'
    const SEP2: u64 = 0x0000_FF00_00FF_0000; // bytes 2 and 5: ':'
    let sep_ok = w0 & SEP0 == 0x2D00_002D_0000_0000
        && w1 & SEP1 == 0x0000_3A00_0054_0000
        && w2 & SEP2 == 0x0000_3A00_003A_0000;
    if !sep_ok
        || non_digits(w0, !SEP0) != 0
        || non_digits(w1, !SEP1) != 0
        || non_digits(w2, !SEP2) != 0
    {
        return None;
    }
    // Each word's two-digit values at once: with the separators masked out, byte k of
    // `pairs` is 10·digit(k) + digit(k + 1) (at most 99, so no byte carries into the next).
    let pairs = |w: u64, sep: u64| {
        let v = (w & !sep).wrapping_sub(0x3030_3030_3030_3030 & !sep);
        v.wrapping_mul(10).wrapping_add(v >> 8)
    };
    let byte = |p: u64, k: u32| ((p >> (8 * k)) & 0xFF) as u32;
    let (p0, p1, p2) = (pairs(w0, SEP0), pairs(w1, SEP1), pairs(w2, SEP2));
    let year = byte(p0, 0) * 100 + byte(p0, 2);
    let (month, day) = (byte(p0, 5), byte(p1, 0));
    let (hour, minute, second) = (byte(p1, 3), byte(p1, 6), byte(p2, 6));
    // Months of the table's years are looked up; other years and impossible months go to
    // the general parser, which decides them.
    let m = (year.wrapping_sub(TABLE_FIRST_YEAR) as usize * 12)
        .wrapping_add(month as usize)
        .wrapping_sub(1);
    let (Some(&first), Some(&next)) = (MONTH_START_DAY.get(m), MONTH_START_DAY.get(m + 1)) else {
        return None;
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day as i32 > next - first
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let local_ms = (first + day as i32 - 1) as i64 * MS_PER_DAY
        + ((hour * 3600 + minute * 60 + second) as i64) * 1000;
    Some(local_ms - offset_min as i64 * 60_000)
}

fn parse_timestamp_general(b: &[u8], default_offset_min: i32) -> Option<i64> {
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits::<4>(b, 0)? as i64;
    let month = digits::<2>(b, 5)?;
    let day = digits::<2>(b, 8)?;
    let hour = digits::<2>(b, 11)?;
    let minute = digits::<2>(b, 14)?;
    let second = digits::<2>(b, 17)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        // `.m`, `.mm` or `.mmm`; more digits (micro/nanoseconds) are truncated to ms.
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 3 {
                millis = millis * 10 + (b[at] - b'0') as i64;
            }
            at += 1;
        }
        let n = at - start;
        if n == 0 || n > 9 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_min: i32 = match b.get(at) {
        None => default_offset_min,
        Some(b'Z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits::<2>(b, at + 1)?;
            let om = match (b.get(at + 3), b.len() - at) {
                (Some(b':'), 6) => digits::<2>(b, at + 4)?,
                (Some(_), 5) => digits::<2>(b, at + 3)?,
                (None, 3) => 0,
                _ => return None,
            };
            if oh > 14 || om > 59 {
                return None;
            }
            let o = (oh * 60 + om) as i32;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let local_ms =
        days * MS_PER_DAY + ((hour * 3600 + minute * 60 + second) as i64) * 1000 + millis;
    Some(local_ms - offset_min as i64 * 60_000)
}

/// Local calendar day number (days since 1970-01-01 in the network's zone).
#[inline]
pub fn local_day(epoch_ms: i64, offset_min: i32) -> i64 {
    (epoch_ms + offset_min as i64 * 60_000).div_euclid(MS_PER_DAY)
}

/// Local minute of the day, 0..1440.
#[inline]
pub fn local_minute_of_day(epoch_ms: i64, offset_min: i32) -> u32 {
    ((epoch_ms + offset_min as i64 * 60_000).rem_euclid(MS_PER_DAY) / 60_000) as u32
}

/// `YYYY-MM-DD` of a day number.
pub fn format_date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SS±hh:mm` of an instant in a zone (the contract's time format).
pub fn format_timestamp(epoch_ms: i64, offset_min: i32) -> String {
    let local = epoch_ms + offset_min as i64 * 60_000;
    let s = local.rem_euclid(MS_PER_DAY) / 1000;
    let sign = if offset_min < 0 { '-' } else { '+' };
    let o = offset_min.abs();
    format!(
        "{}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        format_date(local.div_euclid(MS_PER_DAY)),
        s / 3600,
        s / 60 % 60,
        s % 60,
        o / 60,
        o % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CST: i32 = DEFAULT_NETWORK_UTC_OFFSET_MIN;

    #[test]
    fn accepted_forms() {
        let base = parse_timestamp_ms("2026-11-01T08:00:00", CST).unwrap();
        assert_eq!(base, days_from_civil(2026, 11, 1) * MS_PER_DAY); // 08:00 CST = 00:00 UTC
        let cases: &[(&str, i64)] = &[
            ("2026-11-01T08:00:00+08:00", 0),
            ("2026-11-01T00:00:00Z", 0),
            ("2026-11-01T00:00:00+00:00", 0),
            ("2026-10-31T19:00:00-0500", 0),
            ("2026-11-01T08:00:00.123", 123),
            ("2026-11-01T08:00:00.1", 100),
            ("2026-11-01T08:00:00.123456+08:00", 123),
            ("2026-11-01 08:00:00", 0),
        ];
        for (s, delta) in cases {
            assert_eq!(parse_timestamp_ms(s, CST), Some(base + delta), "{s}");
        }
    }

    #[test]
    fn rejected_forms() {
        for s in [
            "",
            "2026-11-01",
            "2026-13-01T00:00:00",
            "2026-02-29T00:00:00",
            "2026-11-31T00:00:00",
            "2026-11-01T24:00:00",
            "2026-11-01T00:60:00",
            "2026-11-01T00:00:60",
            "2026-11-01T00:00:00.",
            "2026-11-01T00:00:00+8",
            "2026-11-01T00:00:00+15:00",
            "2026-11-01T00:00:00Zjunk",
            "2026/11/01T00:00:00",
            "２０２６-11-01T00:00:00",
        ] {
            assert_eq!(parse_timestamp_ms(s, CST), None, "{s}");
        }
        assert!(parse_timestamp_ms("2024-02-29T00:00:00", CST).is_some());
    }

    proptest::proptest! {
        /// The word-wise fast path and the general parser agree on every 19-byte string
        /// near the canonical form (digits, separators and junk at every position).
        #[test]
        fn canonical_fast_path_agrees(bytes in proptest::array::uniform19(proptest::prop_oneof![
            8 => b'0'..=b'9', 1 => proptest::sample::select(b"-:T 9/;Z".to_vec()), 1 => proptest::prelude::any::<u8>()
        ]), template in proptest::prelude::any::<bool>()) {
            let mut b = bytes;
            if template {
                // Mostly-valid shapes, so the date and range checks are exercised too.
                for (i, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
                    b[i] = c;
                }
            }
            if let Some(fast) = canonical_local_ms(&b, CST) {
                proptest::prop_assert_eq!(Some(fast), parse_timestamp_general(&b, CST));
            } else if b[10] == b'T' && (b"1970"..=b"2099").contains(&&[b[0], b[1], b[2], b[3]]) {
                // Not taken by the fast path in the years it covers: then the general parser
                // rejects it too.
                proptest::prop_assert_eq!(parse_timestamp_general(&b, CST), None);
            }
            if let Ok(text) = std::str::from_utf8(&b) {
                proptest::prop_assert_eq!(parse_timestamp_ms(text, CST), parse_timestamp_general(&b, CST));
            }
        }
    }

    #[test]
    fn canonical_fast_path_matches_the_general_parser_over_years() {
        let mut taken = 0;
        // Every day of the month table's years and a few either side of them.
        for day in days_from_civil(1967, 1, 1)..days_from_civil(2103, 1, 1) {
            for secs in [0, 1, 59, 3599, 43_200, 86_399] {
                let ms = (day * 86_400 + secs) * 1000 - CST as i64 * 60_000;
                let text = format_timestamp(ms, CST);
                let local = &text[..19];
                let in_table =
                    (days_from_civil(1970, 1, 1)..days_from_civil(2100, 1, 1)).contains(&day);
                assert_eq!(
                    canonical_local_ms(local.as_bytes(), CST),
                    in_table.then_some(ms),
                    "{text}"
                );
                assert_eq!(parse_timestamp_general(local.as_bytes(), CST), Some(ms), "{text}");
                assert_eq!(parse_timestamp_ms(local, CST), Some(ms), "{text}");
                taken += in_table as usize;
            }
        }
        assert_eq!(taken, 6 * (days_from_civil(2100, 1, 1) - days_from_civil(1970, 1, 1)) as usize);
    }

    /// Day 0 of a month, day 29 of February in common years, day 31 of 30-day months and
    /// month 0 or 13 are refused by the fast path and the general parser alike.
    #[test]
    fn impossible_dates_are_refused() {
        for s in [
            "2026-11-00T00:00:00",
            "2026-02-29T00:00:00",
            "2100-02-29T00:00:00",
            "2026-04-31T00:00:00",
            "2026-00-10T00:00:00",
            "2026-13-10T00:00:00",
            "2099-12-32T00:00:00",
        ] {
            assert_eq!(canonical_local_ms(s.as_bytes(), CST), None, "{s}");
            assert_eq!(parse_timestamp_ms(s, CST), None, "{s}");
        }
        for s in [
            "2024-02-29T00:00:00",
            "2000-02-29T00:00:00",
            "2099-12-31T23:59:59",
            "1970-01-01T00:00:00",
        ] {
            assert!(canonical_local_ms(s.as_bytes(), CST).is_some(), "{s}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for day in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(format_date(days_from_civil(2026, 11, 22)), "2026-11-22");
    }

    #[test]
    fn local_parts() {
        let t = parse_timestamp_ms("2026-11-01T23:30:00", CST).unwrap();
        assert_eq!(local_minute_of_day(t, CST), 23 * 60 + 30);
        assert_eq!(format_date(local_day(t, CST)), "2026-11-01");
        assert_eq!(format_date(local_day(t, 0)), "2026-11-01");
        let t = parse_timestamp_ms("2026-11-01T01:30:00", CST).unwrap();
        assert_eq!(format_date(local_day(t, 0)), "2026-10-31");
        assert_eq!(format_timestamp(t, CST), "2026-11-01T01:30:00+08:00");
        assert_eq!(parse_timestamp_ms(&format_timestamp(t, -330), CST), Some(t));
    }
}
