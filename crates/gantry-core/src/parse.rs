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

use std::borrow::Cow;

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

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes of `w` that end a plain string run (`"`, `\`, control characters): the lowest set
/// high bit marks the first one exactly.
#[inline]
fn string_stop_mask(w: u64) -> u64 {
    let q = w ^ (LO * b'"' as u64);
    let bs = w ^ (LO * b'\\' as u64);
    let has_q = q.wrapping_sub(LO) & !q;
    let has_bs = bs.wrapping_sub(LO) & !bs;
    let ctl = w.wrapping_sub(LO * 0x20) & !w;
    (has_q | has_bs | ctl) & HI
}

impl<'a> Cursor<'a> {
    #[inline]
    fn syntax(&self) -> ObjError {
        ObjError::Syntax(RejectReason::NotJson { at: self.i as u32 })
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, ch: u8) -> ObjResult<()> {
        self.ws();
        if self.peek() == Some(ch) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// A JSON string; the cursor is on its opening quote.
    #[inline]
    fn string(&mut self) -> ObjResult<Cow<'a, str>> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let start = self.i;
        let mut i = start;
        // OR of every byte scanned: its high bits say whether the text is pure ASCII.
        let mut high = 0u64;
        loop {
            if let Some(block) = self.b.get(i..i + 16) {
                let m = classify16(block.try_into().expect("16 bytes"));
                let (stop, nonascii) = (m.quote | m.stop, m.nonascii);
                // A non-ASCII byte before the stop marks the text as such (in `HI` terms).
                let before = if stop == 0 {
                    nonascii
                } else {
                    nonascii & ((1u32 << stop.trailing_zeros()) - 1)
                };
                if before != 0 {
                    high |= HI;
                }
                if stop == 0 {
                    i += 16;
                    continue;
                }
                i += stop.trailing_zeros() as usize;
            } else if i + 8 <= self.b.len() {
                let w = u64::from_le_bytes(self.b[i..i + 8].try_into().expect("8 bytes"));
                let m = string_stop_mask(w);
                if m == 0 {
                    high |= w;
                    i += 8;
                    continue;
                }
                let k = m.trailing_zeros() / 8;
                high |= w & ((1u64 << (k * 8)) - 1);
                i += k as usize;
            } else {
                while i < self.b.len() && !matches!(self.b[i], b'"' | b'\\' | 0..=0x1f) {
                    high |= self.b[i] as u64;
                    i += 1;
                }
                if i >= self.b.len() {
                    self.i = i;
                    return Err(self.syntax());
                }
            }
            match self.b[i] {
                b'"' => {
                    self.i = i + 1;
                    return self.text(start, i, high).map(Cow::Borrowed);
                }
                b'\\' => {
                    self.i = i;
                    return self.string_with_escapes(start);
                }
                _ => {
                    self.i = i;
                    return Err(self.syntax());
                }
            }
        }
    }

    /// The bytes `start..end` as text; `high` has a bit in `HI` set if any byte is not ASCII.
    #[inline]
    fn text(&self, start: usize, end: usize, high: u64) -> ObjResult<&'a str> {
        let bytes = &self.b[start..end];
        if high & HI == 0 {
            debug_assert!(bytes.is_ascii());
            // SAFETY: every byte of `bytes` was seen by the scanner with its high bit clear,
            // so it is ASCII and therefore valid UTF-8.
            Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).map_err(|_| ObjError::Syntax(RejectReason::NotUtf8))
        }
    }

    /// Slow path: the string from `start` has escapes; the cursor is on the first `\`.
    #[cold]
    fn string_with_escapes(&mut self, start: usize) -> ObjResult<Cow<'a, str>> {
        let mut out = String::with_capacity(self.i - start + 16);
        out.push_str(self.text(start, self.i, HI)?);
        loop {
            let Some(c) = self.peek() else { return Err(self.syntax()) };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.i += 1;
                    let Some(e) = self.peek() else { return Err(self.syntax()) };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.syntax());
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.syntax());
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            match char::from_u32(cp) {
                                Some(ch) => out.push(ch),
                                None => return Err(self.syntax()),
                            }
                        }
                        _ => {
                            self.i -= 1;
                            return Err(self.syntax());
                        }
                    }
                }
                0..=0x1f => return Err(self.syntax()),
                _ => {
                    // Copy the plain run up to the next quote or backslash in one go.
                    let run = memchr::memchr2(b'"', b'\\', &self.b[self.i..])
                        .map_or(self.b.len(), |k| self.i + k);
                    if let Some(k) = self.b[self.i..run].iter().position(|&b| b < 0x20) {
                        self.i += k;
                        return Err(self.syntax());
                    }
                    out.push_str(self.text(self.i, run, HI)?);
                    self.i = run;
                }
            }
        }
    }

    fn hex4(&mut self) -> ObjResult<u32> {
        let Some(h) = self.b.get(self.i..self.i + 4) else { return Err(self.syntax()) };
        let mut v = 0u32;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(self.syntax()),
            };
            v = v * 16 + d as u32;
        }
        self.i += 4;
        Ok(v)
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> ObjResult<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// A JSON number as an integer. A valid number with a fraction or exponent is the wrong
    /// type for an integer field; one beyond i64 is out of range.
    #[inline]
    fn integer(&mut self, field: Field) -> ObjResult<i64> {
        // Fast path: up to 18 digits cannot overflow an i64, so no checked arithmetic.
        let start = self.i;
        let mut v: u64 = 0;
        let mut i = start;
        while let Some(&c) = self.b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v * 10 + d as u64;
            i += 1;
            if i - start > 18 {
                return self.integer_slow(field);
            }
        }
        let n = i - start;
        if n == 0
            || (n > 1 && self.b[start] == b'0')
            || matches!(self.b.get(i), Some(b'.' | b'e' | b'E'))
        {
            return self.integer_slow(field);
        }
        self.i = i;
        Ok(v as i64)
    }

    /// Every other integer: negative, long, malformed or not an integer at all.
    #[cold]
    fn integer_slow(&mut self, field: Field) -> ObjResult<i64> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        let mut v: i64 = 0;
        let mut overflow = false;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            let d = (c - b'0') as i64;
            match v
                .checked_mul(10)
                .and_then(|x| if neg { x.checked_sub(d) } else { x.checked_add(d) })
            {
                Some(x) => v = x,
                None => overflow = true,
            }
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return Err(self.syntax());
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            self.skip_number_tail()?;
            return Err(ObjError::Syntax(RejectReason::WrongType(field)));
        }
        if overflow {
            return Err(ObjError::Syntax(RejectReason::OutOfRange(field)));
        }
        Ok(v)
    }

    fn skip_number_tail(&mut self) -> ObjResult<()> {
        if self.peek() == Some(b'.') {
            self.i += 1;
            let s = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == s {
                return Err(self.syntax());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let s = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == s {
                return Err(self.syntax());
            }
        }
        Ok(())
    }

    /// Skips any JSON value (an unknown field's).
    fn skip_value(&mut self, depth: u32) -> ObjResult<()> {
        if depth > SKIP_DEPTH_MAX {
            return Err(self.syntax());
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.syntax());
                    }
                    self.string()?;
                    self.eat(b':')?;
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.syntax()),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.syntax()),
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => {
                if self.peek() == Some(b'-') {
                    self.i += 1;
                }
                let s = self.i;
                while let Some(b'0'..=b'9') = self.peek() {
                    self.i += 1;
                }
                if self.i == s || (self.i - s > 1 && self.b[s] == b'0') {
                    return Err(self.syntax());
                }
                self.skip_number_tail()
            }
            _ => Err(self.syntax()),
        }
    }

    /// A string-valued field: `null` counts as absent; any other type is wrong.
    #[inline]
    fn opt_string(&mut self, field: Field) -> ObjResult<Option<Cow<'a, str>>> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            Some(b'n') => self.literal(b"null").map(|_| None),
            Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'{' | b'[') => {
                Err(ObjError::Syntax(RejectReason::WrongType(field)))
            }
            _ => Err(self.syntax()),
        }
    }

    /// An integer-valued field: `null` counts as absent.
    #[inline]
    fn opt_integer(&mut self, field: Field) -> ObjResult<Option<i64>> {
        self.ws();
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.integer(field).map(Some),
            Some(b'n') => self.literal(b"null").map(|_| None),
            Some(b'"' | b't' | b'f' | b'{' | b'[') => {
                Err(ObjError::Syntax(RejectReason::WrongType(field)))
            }
            _ => Err(self.syntax()),
        }
    }

    /// Walks an object's members, calling `member(k, cursor)` with the cursor on the value,
    /// where `k` is the key's index in `keys` (`keys.len()` for an unknown key).
    ///
    /// Lanes write their fields in the same order every time, so the key after key `k` is
    /// predicted to be `k + 1` and checked with one comparison; only a miss scans the key.
    #[inline]
    fn object(
        &mut self,
        keys: &[Key],
        mut member: impl FnMut(usize, &mut Self) -> ObjResult<()>,
    ) -> ObjResult<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut expect = 0;
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.syntax());
            }
            // An optional field the lane left out makes the prediction miss; the keys after
            // it are tried the same cheap way before the key is scanned as a string.
            let idx = match find_key_at(keys, expect, &self.b[self.i + 1..]) {
                Some(idx) => {
                    self.i += keys[idx].name.len() + 2;
                    idx
                }
                None => {
                    let key = self.string()?;
                    keys.iter().position(|k| k.name == key.as_bytes()).unwrap_or(keys.len())
                }
            };
            expect = idx + 1;
            self.eat(b':')?;
            self.ws();
            member(idx, self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax()),
            }
        }
    }
}

/// A known field: its JSON name, and which slot of the string or integer fields it fills.
struct Key {
    name: &'static [u8],
    field: Field,
    slot: Slot,
    /// `name` followed by its closing quote, little-endian in two words, and the mask of
    /// those bytes: the predicted key is checked with two loads and compares, no `memcmp`.
    quoted: [u64; 2],
    quoted_mask: [u64; 2],
    /// The whole member head as the canonical path expects it, `,"name":` and, for a string
    /// slot, the value's opening quote: little-endian in three words with its byte mask, so a
    /// member is recognised with three loads and compares. `open0` is the first word with
    /// `{` in place of the comma, for the object's first member (only the first key is
    /// looked for there).
    head: [u64; 3],
    head_mask: [u64; 3],
    open0: u64,
    head_len: usize,
}

/// Bytes a member head may take: the comma, quotes and colon of the longest key (14 bytes,
/// `tollIntervalId`) and a string value's opening quote.
const HEAD_BYTES_MAX: usize = 24;

#[derive(Clone, Copy)]
enum Slot {
    Str(usize),
    Int(usize),
}

const fn key(name: &'static [u8], field: Field, slot: Slot) -> Key {
    assert!(name.len() < 16, "a key and its quote must fit in 16 bytes");
    let mut quoted = [0u64; 2];
    let mut quoted_mask = [0u64; 2];
    let mut i = 0;
    while i <= name.len() {
        let byte = if i < name.len() { name[i] } else { b'"' };
        quoted[i / 8] |= (byte as u64) << (8 * (i % 8));
        quoted_mask[i / 8] |= 0xFF << (8 * (i % 8));
        i += 1;
    }
    // `,"name":` then `"` for a string slot.
    let head_len = name.len() + 4 + matches!(slot, Slot::Str(_)) as usize;
    assert!(head_len <= HEAD_BYTES_MAX, "a member head must fit in three words");
    let mut head = [0u64; 3];
    let mut head_mask = [0u64; 3];
    let mut i = 0;
    while i < head_len {
        let byte = match i {
            0 => b',',
            1 => b'"',
            _ if i - 2 < name.len() => name[i - 2],
            _ if i - 2 == name.len() => b'"',
            _ if i - 3 == name.len() => b':',
            _ => b'"',
        };
        head[i / 8] |= (byte as u64) << (8 * (i % 8));
        head_mask[i / 8] |= 0xFF << (8 * (i % 8));
        i += 1;
    }
    let open0 = (head[0] & !0xFF) | b'{' as u64;
    Key { name, field, slot, quoted, quoted_mask, head, head_mask, open0, head_len }
}

impl Key {
    /// Whether `b` (the bytes after the opening quote) starts with this key and its closing quote.
    #[inline]
    fn is_at(&self, b: &[u8]) -> bool {
        if let Some(w) = b.get(..16) {
            let lo = u64::from_le_bytes(w[..8].try_into().expect("8 bytes"));
            let hi = u64::from_le_bytes(w[8..].try_into().expect("8 bytes"));
            lo & self.quoted_mask[0] == self.quoted[0] && hi & self.quoted_mask[1] == self.quoted[1]
        } else {
            b.len() > self.name.len()
                && &b[..self.name.len()] == self.name
                && b[self.name.len()] == b'"'
        }
    }
}

/// The first of `keys[from..]` that `b` (the bytes after a key's opening quote) starts with,
/// as its index in `keys`: the expected key, or one after it when optional fields were left
/// out, each checked with two word compares.
#[inline]
fn find_key_at(keys: &[Key], from: usize, b: &[u8]) -> Option<usize> {
    keys.get(from..)?.iter().position(|k| k.is_at(b)).map(|k| from + k)
}

/// Lane record fields in the contract's (and the lanes') order.
const LANE_KEYS: [Key; 14] = [
    key(b"tradeId", Field::TradeId, Slot::Str(0)),
    key(b"gantryId", Field::GantryId, Slot::Str(1)),
    key(b"tollIntervalId", Field::TollIntervalId, Slot::Str(2)),
    key(b"transTime", Field::TransTime, Slot::Str(3)),
    key(b"mediaType", Field::MediaType, Slot::Int(0)),
    key(b"cpuCardId", Field::CpuCardId, Slot::Str(4)),
    key(b"obuId", Field::ObuId, Slot::Str(5)),
    key(b"vehiclePlate", Field::VehiclePlate, Slot::Str(6)),
    key(b"vehicleType", Field::VehicleType, Slot::Int(1)),
    key(b"vehicleClass", Field::VehicleClass, Slot::Int(2)),
    key(b"axleCount", Field::AxleCount, Slot::Int(3)),
    key(b"vehicleSeat", Field::VehicleSeat, Slot::Int(4)),
    key(b"passId", Field::PassId, Slot::Str(7)),
    key(b"fee", Field::Fee, Slot::Int(5)),
];

/// Account event fields.
const EVENT_KEYS: [Key; 16] = [
    key(b"type", Field::Type, Slot::Str(0)),
    key(b"cardId", Field::CardId, Slot::Str(1)),
    key(b"time", Field::Time, Slot::Str(2)),
    key(b"customerId", Field::CustomerId, Slot::Str(3)),
    key(b"cardType", Field::CardType, Slot::Int(0)),
    key(b"vehicleType", Field::VehicleType, Slot::Int(1)),
    key(b"plate", Field::Plate, Slot::Str(4)),
    key(b"balance", Field::Balance, Slot::Int(2)),
    key(b"creditLimit", Field::CreditLimit, Slot::Int(3)),
    key(b"topupId", Field::TopupId, Slot::Str(5)),
    key(b"amount", Field::Amount, Slot::Int(4)),
    key(b"channel", Field::Channel, Slot::Str(6)),
    key(b"adjustId", Field::AdjustId, Slot::Str(7)),
    key(b"reason", Field::Reason, Slot::Str(8)),
    key(b"tradeId", Field::TradeId, Slot::Str(9)),
    key(b"status", Field::Status, Slot::Str(10)),
];

type Slots<'a, const S: usize, const I: usize> = ([Option<Cow<'a, str>>; S], [Option<i64>; I]);

/// Scans an object's members into string and integer slots per `keys`: first the way lanes
/// write records, then, if the object is written any other way, in full generality.
#[inline]
fn scan_fields<'a, const S: usize, const I: usize, const N: usize>(
    c: &mut Cursor<'a>,
    keys: &[Key; N],
) -> ObjResult<Slots<'a, S, I>> {
    let start = c.i;
    if let Some(slots) = scan_fields_canonical(c, keys) {
        return Ok(slots);
    }
    c.i = start;
    scan_fields_general(c, keys)
}

/// The fast path for an object written as producers write it: no whitespace, no escapes,
/// known keys in `keys` order (absent ones skipped), each once, values of the slot's type
/// and not `null`. Each member head `,"key":` is checked with three word compares; a
/// string value is scanned 16 bytes at a time for its closing quote ([`scan_plain_string`]).
/// `None` at the first deviation; the caller then rescans the object with
/// [`scan_fields_general`], which accepts the same objects with the same result (and names
/// the reason for the others).
#[inline(always)]
fn scan_fields_canonical<'a, const S: usize, const I: usize, const N: usize>(
    c: &mut Cursor<'a>,
    keys: &[Key; N],
) -> Option<Slots<'a, S, I>> {
    let start = c.i;
    let b = &c.b[start..];
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut strs: [Option<Cow<'a, str>>; S] = std::array::from_fn(|_| None);
    let mut ints = [None; I];
    // At the byte after the last value: the `,` or `}` that follows it (or the `{`).
    let mut p = 0;
    // Tries key `k` at `p`: absent (another key or the end follows) is fine, since absent
    // fields are skipped; a present key must be followed by a value of its slot's type.
    // A macro rather than a closure, so that each key's name, length and slot are constants.
    macro_rules! member {
        ($k:literal) => {
            if $k < N {
                let key = &keys[$k];
                let (w0, w1, w2) = head_words(b, p);
                // Only the first key is looked for right after the `{`: an object without
                // it is left to the general walk (which decides it the same way), and every
                // other key's check needs no test of where it is.
                let first = if $k == 0 { key.open0 } else { key.head[0] };
                if (w0 & key.head_mask[0]) ^ first
                    | (w1 & key.head_mask[1]) ^ key.head[1]
                    | (w2 & key.head_mask[2]) ^ key.head[2]
                    == 0
                {
                    let v = p + key.head_len;
                    match key.slot {
                        Slot::Str(s) => {
                            let (end, nonascii) = scan_plain_string(b, v)?;
                            let text = &b[v..end];
                            if !nonascii.well_formed(text) {
                                return None;
                            }
                            // SAFETY: checked just above, by the same rules as `from_utf8`
                            // (ASCII when the scan saw no byte with its high bit set).
                            let text = unsafe { std::str::from_utf8_unchecked(text) };
                            strs[s] = Some(Cow::Borrowed(text));
                            p = end + 1;
                        }
                        Slot::Int(s) => match small_integer(b, v) {
                            Some((x, end)) => {
                                ints[s] = Some(x);
                                p = end;
                            }
                            None => {
                                c.i = start + v;
                                ints[s] = Some(c.integer(key.field).ok()?);
                                p = c.i - start;
                            }
                        },
                    }
                }
            }
        };
    }
    macro_rules! each_key {
        ($($k:literal)*) => { $( member!($k); )* };
    }
    each_key!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    const { assert!(N <= 16, "each_key! unrolls 16 keys") };
    // `p > 0`: an object with no member at all is left to the general walk.
    if p > 0 && b.get(p) == Some(&b'}') {
        c.i = start + p + 1;
        Some((strs, ints))
    } else {
        None
    }
}

/// A one- or two-digit integer at `b[v..]` ending at a `,` or `}`, and the index of that
/// byte: most integer fields of a record (media type, class, seats, axles) are that, and this
/// reads them inline instead of calling [`Cursor::integer`]. `None` for anything else (a
/// leading zero before a second digit, more digits, a sign, a fraction, the end of the
/// message), which goes through `Cursor::integer`.
#[inline(always)]
fn small_integer(b: &[u8], v: usize) -> Option<(i64, usize)> {
    if !fits(b, v, 3) {
        return None;
    }
    // SAFETY: `fits` checked that the 3 bytes at `v` are inside `b`.
    let w = unsafe { b.get_unchecked(v..v + 3) };
    let (d0, d1) = (w[0].wrapping_sub(b'0'), w[1].wrapping_sub(b'0'));
    if d0 <= 9 && matches!(w[1], b',' | b'}') {
        Some((d0 as i64, v + 1))
    } else if (1..=9).contains(&d0) && d1 <= 9 && matches!(w[2], b',' | b'}') {
        Some(((d0 * 10 + d1) as i64, v + 2))
    } else {
        None
    }
}

/// The [`HEAD_BYTES_MAX`] bytes at `b[p..]` as three little-endian words, zero past the end
/// of `b` (a zero byte is in no member head, so a head cut off by the end never matches).
///
/// Near the end of the message (the last members of every record) the words are the
/// message's last 24 bytes shifted down, not a copy into a zeroed buffer: that copy was a
/// `memcpy` call whose small stores the next wide load could not be forwarded from, a stall
/// of its own on nearly every record.
#[inline(always)]
fn head_words(b: &[u8], p: usize) -> (u64, u64, u64) {
    if fits(b, p, HEAD_BYTES_MAX) {
        // SAFETY: `fits` checked that the 24 bytes at `p` are inside `b`.
        unsafe { (word_at(b, p), word_at(b, p + 8), word_at(b, p + 16)) }
    } else if b.get(p) == Some(&b'}') {
        // At the object's closing brace (after its last member, near the end of every
        // message) no member follows: zeros match no head.
        (0, 0, 0)
    } else {
        head_words_tail(b, p)
    }
}

/// Whether the `n` bytes at `b[at..]` are all inside `b` (`false` for `at` past the end): one
/// signed compare against a bound the compiler computes once per message, where
/// `b.get(at..at + n)` is two compares and an overflow check at every read.
#[inline(always)]
fn fits(b: &[u8], at: usize, n: usize) -> bool {
    // Slices are at most isize::MAX bytes and `at` is an index into one or at most 16 past
    // its end, so neither side wraps.
    at as isize <= b.len() as isize - n as isize
}

/// The 16 bytes at `b[at..]`.
///
/// # Safety
/// `at + 16 <= b.len()`.
#[inline(always)]
unsafe fn block_at(b: &[u8], at: usize) -> &[u8; 16] {
    debug_assert!(at + 16 <= b.len());
    // SAFETY: the caller guarantees `at + 16 <= b.len()`, so the 16 bytes are inside `b`;
    // `[u8; 16]` has alignment 1.
    unsafe { &*(b.as_ptr().add(at) as *const [u8; 16]) }
}

/// The little-endian word at `b[at..at + 8]`.
///
/// # Safety
/// `at + 8 <= b.len()`.
#[inline(always)]
unsafe fn word_at(b: &[u8], at: usize) -> u64 {
    debug_assert!(at + 8 <= b.len());
    // SAFETY: the caller guarantees `at + 8 <= b.len()`: the 8 bytes are inside `b`, and the
    // read is unaligned.
    u64::from_le(unsafe { std::ptr::read_unaligned(b.as_ptr().add(at) as *const u64) })
}

/// [`head_words`] when fewer than [`HEAD_BYTES_MAX`] bytes follow `p`.
#[inline]
fn head_words_tail(b: &[u8], p: usize) -> (u64, u64, u64) {
    let rest = b.get(p..).unwrap_or_default();
    let mut x = [0u64; 3];
    if b.len() >= HEAD_BYTES_MAX {
        // The last 24 bytes hold `rest` at their end; shift it down to the start.
        let last = &b[b.len() - HEAD_BYTES_MAX..];
        let w = |k: usize| u64::from_le_bytes(last[k..k + 8].try_into().expect("8 bytes"));
        let words = [w(0), w(8), w(16), 0];
        let skip = HEAD_BYTES_MAX - rest.len();
        let (whole, bits) = (skip / 8, (skip % 8) * 8);
        for (j, out) in x.iter_mut().enumerate() {
            let lo = words.get(j + whole).copied().unwrap_or(0);
            let hi = words.get(j + whole + 1).copied().unwrap_or(0);
            *out = if bits == 0 { lo } else { (lo >> bits) | (hi << (64 - bits)) };
        }
    } else {
        // A message shorter than a member head: assemble the words a byte at a time.
        for (k, &c) in rest.iter().enumerate() {
            x[k / 8] |= (c as u64) << (8 * (k % 8));
        }
    }
    (x[0], x[1], x[2])
}

/// Whether `b` is well-formed UTF-8 (Unicode table 3-7: no overlongs, no surrogates,
/// nothing above U+10FFFF), exactly as `std::str::from_utf8` decides. For the short text
/// fields of a record, plates above all ("苏A12345"), a byte loop is ~2× cheaper than the
/// standard library's, which is built for long text.
#[inline]
fn utf8_well_formed(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        // ASCII runs a word at a time, up to the next byte with its high bit set.
        if let Some(w) = b.get(i..i + 8) {
            let high = u64::from_le_bytes(w.try_into().expect("8 bytes")) & 0x8080_8080_8080_8080;
            if high == 0 {
                i += 8;
                continue;
            }
            i += high.trailing_zeros() as usize / 8;
        } else if b[i] < 0x80 {
            i += 1;
            continue;
        }
        let x = b[i];
        // Width and the range allowed for the second byte; later bytes are 0x80..=0xBF.
        let (width, lo, hi) = match x {
            0xC2..=0xDF => (2, 0x80, 0xBF),
            0xE0 => (3, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
            0xED => (3, 0x80, 0x9F),
            0xF0 => (4, 0x90, 0xBF),
            0xF1..=0xF3 => (4, 0x80, 0xBF),
            0xF4 => (4, 0x80, 0x8F),
            _ => return false,
        };
        let Some(seq) = b.get(i..i + width) else { return false };
        if !(lo..=hi).contains(&seq[1]) || seq[2..].iter().any(|&c| c & 0xC0 != 0x80) {
            return false;
        }
        i += width;
    }
    true
}

/// The end of a string value without escapes that starts at `b[from]` (just after its
/// opening quote): the index of its closing quote, and where it has bytes that are not ASCII
/// (a [`NonAscii`] mask). `None` if a backslash or control character comes first, or the
/// bytes end: such strings (escapes, broken input) are left to the general walk. Reads 16
/// bytes at a time, so the ids of a lane record take one or two steps each.
#[inline(always)]
fn scan_plain_string(b: &[u8], from: usize) -> Option<(usize, NonAscii)> {
    let mut at = from;
    let mut nonascii = 0;
    // The first block's bits go in as they are; a later block's land above bit 15.
    let mut shift = 0;
    loop {
        let c = if fits(b, at, 16) {
            // SAFETY: `fits` checked that the 16 bytes at `at` are inside `b`.
            classify16(unsafe { block_at(b, at) })
        } else {
            classify16_tail(b, at)?
        };
        // Bytes before the first quote of the block (all 16 if it has none).
        let before = c.quote.wrapping_sub(1) & !c.quote & 0xFFFF;
        if c.stop & before != 0 {
            return None;
        }
        nonascii |= (c.nonascii & before) << shift;
        if c.quote != 0 {
            return Some((at + c.quote.trailing_zeros() as usize, NonAscii(nonascii)));
        }
        shift = 16;
        at += 16;
    }
}

/// Which bytes of a scanned string are not ASCII: bit k for byte k of its first 16 bytes,
/// and some bit above 15 if any later byte is not.
#[derive(Clone, Copy)]
struct NonAscii(u32);

impl NonAscii {
    /// Whether the string `text` these bits were taken from is well-formed UTF-8. A plate's
    /// province character ("苏A12345") is the one non-ASCII text of nearly every record: a
    /// three-byte sequence first and ASCII after it is checked here in a few instructions
    /// (Unicode table 3-7 for the three bytes); anything else goes to [`utf8_well_formed`].
    #[inline(always)]
    fn well_formed(self, text: &[u8]) -> bool {
        match self.0 {
            0 => true,
            0b111 => {
                let (x0, x1, x2) = (text[0], text[1], text[2]);
                x0 & 0xF0 == 0xE0
                    && x1 & 0xC0 == 0x80
                    && x2 & 0xC0 == 0x80
                    && !(x0 == 0xE0 && x1 < 0xA0)
                    && !(x0 == 0xED && x1 > 0x9F)
            }
            _ => utf8_well_formed(text),
        }
    }
}

/// The classes of the fewer than 16 bytes at `b[at..]` (no bit for a byte past the end, so
/// a string not closed by then makes the scan step past the end and give up); `None` if `at`
/// is past the end. The classes come from the message's last 16 bytes, shifted (see
/// [`head_words`] on why not a zero-padded copy).
#[inline]
fn classify16_tail(b: &[u8], at: usize) -> Option<Classes16> {
    let rest = b.get(at..)?;
    let n = rest.len();
    debug_assert!(n < 16);
    if b.len() >= 16 {
        let skip = 16 - n;
        let c = classify16(b[b.len() - 16..].try_into().expect("16 bytes"));
        Some(Classes16 {
            quote: c.quote >> skip,
            nonascii: c.nonascii >> skip,
            stop: c.stop >> skip,
        })
    } else {
        // A message shorter than one read; the NULs after it are stops.
        let mut pad = [0u8; 16];
        pad[..n].copy_from_slice(rest);
        Some(classify16(&pad))
    }
}

struct Classes16 {
    quote: u32,
    nonascii: u32,
    /// Backslashes and control characters.
    stop: u32,
}

/// One bit per byte of `block` for each class. SSE2 is part of x86-64, so this needs no
/// runtime detection; elsewhere a byte loop does the same.
#[inline]
fn classify16(block: &[u8; 16]) -> Classes16 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is always available on x86_64, and the unaligned load reads exactly
        // the 16 bytes of `block`.
        unsafe {
            let v = _mm_loadu_si128(block.as_ptr() as *const __m128i);
            let quote = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8))) as u32;
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
            let ctl = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
            let stop = _mm_movemask_epi8(_mm_or_si128(backslash, ctl)) as u32;
            Classes16 { quote, nonascii: _mm_movemask_epi8(v) as u32, stop }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut m = Classes16 { quote: 0, nonascii: 0, stop: 0 };
        for (j, &c) in block.iter().enumerate() {
            m.quote |= ((c == b'"') as u32) << j;
            m.nonascii |= ((c >> 7) as u32) << j;
            m.stop |= (matches!(c, b'\\' | 0..=0x1f) as u32) << j;
        }
        m
    }
}

/// Any valid JSON object: whitespace, keys in any order, unknown members, `null`s.
#[inline]
fn scan_fields_general<'a, const S: usize, const I: usize>(
    c: &mut Cursor<'a>,
    keys: &[Key],
) -> ObjResult<Slots<'a, S, I>> {
    let mut seen = 0u64;
    let mut strs: [Option<Cow<'a, str>>; S] = std::array::from_fn(|_| None);
    let mut ints = [None; I];
    c.object(keys, |idx, c| {
        let Some(k) = keys.get(idx) else { return c.skip_value(0) };
        first_sighting(&mut seen, k.field)?;
        match k.slot {
            Slot::Str(s) => strs[s] = c.opt_string(k.field)?,
            Slot::Int(s) => ints[s] = c.opt_integer(k.field)?,
        }
        Ok(())
    })?;
    Ok((strs, ints))
}

/// Marks a field as seen; a second sighting is [`RejectReason::DuplicateField`].
#[inline]
fn first_sighting(seen: &mut u64, field: Field) -> ObjResult<()> {
    let bit = 1u64 << field as u32;
    if *seen & bit != 0 {
        return Err(ObjError::Syntax(RejectReason::DuplicateField(field)));
    }
    *seen |= bit;
    Ok(())
}

fn record_err(r: RejectReason) -> ObjError {
    ObjError::Record(r)
}

/// Checks a text field's length in characters.
#[inline]
fn check_chars(s: &str, field: Field, min: usize, max: usize) -> ObjResult<()> {
    // Byte length bounds the char count from above, so short text needs no counting.
    if s.len() >= min && s.len() <= max {
        return Ok(());
    }
    let n = s.chars().count();
    if s.is_empty() || n < min || n > max {
        return Err(record_err(RejectReason::OutOfRange(field)));
    }
    Ok(())
}

#[inline]
fn check_opt_text(s: &Option<Cow<'_, str>>, field: Field) -> ObjResult<()> {
    match s {
        Some(s) if s.len() > TEXT_FIELD_BYTES_MAX => {
            Err(record_err(RejectReason::OutOfRange(field)))
        }
        _ => Ok(()),
    }
}

#[inline]
fn in_range(v: i64, field: Field, lo: i64, hi: i64) -> ObjResult<i64> {
    if v < lo || v > hi {
        Err(record_err(RejectReason::OutOfRange(field)))
    } else {
        Ok(v)
    }
}

#[inline]
fn required<T>(v: Option<T>, field: Field) -> ObjResult<T> {
    v.ok_or(record_err(RejectReason::MissingField(field)))
}

fn parse_lane_object<'a>(c: &mut Cursor<'a>, cfg: &ParseConfig) -> ObjResult<LaneTx<'a>> {
    let (strs, ints) = scan_fields::<8, 6, 14>(c, &LANE_KEYS)?;
    let [trade_id, gantry_id, interval, trans_time, card, obu, plate, pass] = strs;
    let [media, vtype, vclass, axles, seats, fee] = ints;

    use Field::*;
    let trade_id = required(trade_id, TradeId)?;
    check_chars(&trade_id, TradeId, 1, 40)?;
    let gantry_id = required(gantry_id, GantryId)?;
    check_chars(&gantry_id, GantryId, 1, 32)?;
    let toll_interval_id = required(interval, TollIntervalId)?;
    let unit_ok = |u: &str| !u.is_empty() && u.len() <= UNIT_ID_BYTES_MAX;
    let unit_count = match crate::record::find_pipe(toll_interval_id.as_bytes()) {
        // One unit: nearly every record.
        None if unit_ok(&toll_interval_id) => 1,
        None => return Err(record_err(RejectReason::OutOfRange(TollIntervalId))),
        Some(_) => {
            let mut n = 0;
            for u in crate::record::Intervals::new(&toll_interval_id) {
                n += 1;
                if !unit_ok(u) || n > UNITS_PER_RECORD_MAX {
                    return Err(record_err(RejectReason::OutOfRange(TollIntervalId)));
                }
            }
            n as u8
        }
    };
    let trans_time = required(trans_time, TransTime)?;
    let trans_time_ms = parse_timestamp_ms(&trans_time, cfg.network_utc_offset_min)
        .ok_or(record_err(RejectReason::OutOfRange(TransTime)))?;
    let media_type = match required(media, MediaType)? {
        1 => crate::record::MediaType::Etc,
        2 => crate::record::MediaType::Cpc,
        _ => return Err(record_err(RejectReason::OutOfRange(MediaType))),
    };
    let card_id = match &card {
        Some(s) => Some(
            crate::record::CardId::parse(s)
                .ok_or(record_err(RejectReason::OutOfRange(CpuCardId)))?,
        ),
        None if media_type == crate::record::MediaType::Etc => {
            return Err(record_err(RejectReason::MissingField(CpuCardId)))
        }
        None => None,
    };
    check_opt_text(&obu, ObuId)?;
    check_opt_text(&plate, VehiclePlate)?;
    check_opt_text(&pass, PassId)?;
    let vehicle_type = required(vtype, VehicleType)?;
    if !(0..=255).contains(&vehicle_type)
        || crate::record::vehicle_type_index(vehicle_type as u8).is_none()
    {
        return Err(record_err(RejectReason::OutOfRange(VehicleType)));
    }
    let vehicle_class = in_range(vclass.unwrap_or(0), VehicleClass, 0, 255)? as u8;
    let axle_count = match axles {
        Some(a) => Some(in_range(a, AxleCount, 2, 20)? as u8),
        None => None,
    };
    let vehicle_seat = match seats {
        Some(s) => Some(in_range(s, VehicleSeat, 0, 999)? as u16),
        None => None,
    };
    let lane_fee = match fee {
        Some(f) => Some(in_range(f, Fee, 0, AMOUNT_ABS_MAX_FEN)?),
        None => None,
    };
    Ok(LaneTx {
        trade_id,
        gantry_id,
        toll_interval_id,
        unit_count,
        trans_time_ms,
        media_type,
        card_id,
        card_text: card,
        obu_id: obu,
        vehicle_plate: plate,
        vehicle_type: vehicle_type as u8,
        vehicle_class,
        axle_count,
        vehicle_seat,
        pass_id: pass,
        lane_fee,
    })
}

fn parse_account_object<'a>(c: &mut Cursor<'a>, cfg: &ParseConfig) -> ObjResult<AccountEvent<'a>> {
    let (strs, ints) = scan_fields::<11, 5, 16>(c, &EVENT_KEYS)?;
    let [typ, card, time, customer, plate, topup_id, channel, adjust_id, reason, trade_id, status] =
        strs;
    let [card_type, vtype, balance, credit, amount] = ints;

    use Field::*;
    let typ = required(typ, Type)?;
    let card = required(card, CardId)?;
    let card_id =
        crate::record::CardId::parse(&card).ok_or(record_err(RejectReason::OutOfRange(CardId)))?;
    let time = required(time, Time)?;
    let time_ms = parse_timestamp_ms(&time, cfg.network_utc_offset_min)
        .ok_or(record_err(RejectReason::OutOfRange(Time)))?;
    let kind = match &*typ {
        "open" => {
            let customer_id = required(customer, CustomerId)?;
            check_chars(&customer_id, CustomerId, 1, 64)?;
            let card_type = match required(card_type, CardType)? {
                22 => crate::record::CardType::StoredValue,
                23 => crate::record::CardType::Postpaid,
                _ => return Err(record_err(RejectReason::OutOfRange(CardType))),
            };
            let vehicle_type = required(vtype, VehicleType)?;
            if !(0..=255).contains(&vehicle_type)
                || crate::record::vehicle_type_index(vehicle_type as u8).is_none()
            {
                return Err(record_err(RejectReason::OutOfRange(VehicleType)));
            }
            check_opt_text(&plate, Plate)?;
            let balance =
                in_range(balance.unwrap_or(0), Balance, -AMOUNT_ABS_MAX_FEN, AMOUNT_ABS_MAX_FEN)?;
            // The account keeps the credit limit in 32 bits: 21 million yuan is far above any
            // postpaid ETC limit.
            let credit_limit = match card_type {
                crate::record::CardType::Postpaid => {
                    in_range(credit.unwrap_or(0), CreditLimit, 0, i32::MAX as i64)?
                }
                crate::record::CardType::StoredValue => 0,
            };
            AccountEventKind::Open {
                customer_id,
                card_type,
                vehicle_type: vehicle_type as u8,
                plate,
                balance,
                credit_limit,
            }
        }
        "topup" => {
            let topup_id = required(topup_id, TopupId)?;
            check_chars(&topup_id, TopupId, 1, 40)?;
            let amount = in_range(required(amount, Amount)?, Amount, 1, AMOUNT_ABS_MAX_FEN)?;
            check_opt_text(&channel, Channel)?;
            AccountEventKind::Topup { topup_id, amount, channel }
        }
        "adjust" => {
            let adjust_id = required(adjust_id, AdjustId)?;
            check_chars(&adjust_id, AdjustId, 1, 40)?;
            let amount = in_range(
                required(amount, Amount)?,
                Amount,
                -AMOUNT_ABS_MAX_FEN,
                AMOUNT_ABS_MAX_FEN,
            )?;
            let reason = required(reason, Reason)?;
            check_opt_text(&Some(reason.clone()), Reason)?;
            if let Some(t) = &trade_id {
                check_chars(t, TradeId, 1, 40)?;
            }
            AccountEventKind::Adjust { adjust_id, amount, reason, trade_id }
        }
        "status" => {
            let status = match &*required(status, Status)? {
                "active" => CardStatus::Active,
                "lost" => CardStatus::Lost,
                "suspended" => CardStatus::Suspended,
                "cancelled" => CardStatus::Cancelled,
                _ => return Err(record_err(RejectReason::OutOfRange(Status))),
            };
            AccountEventKind::Status { status }
        }
        _ => return Err(record_err(RejectReason::UnknownEventType)),
    };
    Ok(AccountEvent { card_id, time_ms, kind })
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
