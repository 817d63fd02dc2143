//! The scanner: the byte-level reads of a message (SWAR words, SSE2 blocks, each read
//! behind one bound check; every `unsafe` read of the parser is here, each with its
//! SAFETY reason and a debug assertion) and the canonical path that uses them, for objects
//! written the way lanes write them.

use super::*;

pub(super) const LO: u64 = 0x0101_0101_0101_0101;
pub(super) const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes of `w` that end a plain string run (`"`, `\`, control characters): the lowest set
/// high bit marks the first one exactly.
#[inline]
pub(super) fn string_stop_mask(w: u64) -> u64 {
    let q = w ^ (LO * b'"' as u64);
    let bs = w ^ (LO * b'\\' as u64);
    let has_q = q.wrapping_sub(LO) & !q;
    let has_bs = bs.wrapping_sub(LO) & !bs;
    let ctl = w.wrapping_sub(LO * 0x20) & !w;
    (has_q | has_bs | ctl) & HI
}

/// A known field: its JSON name, and which slot of the string or integer fields it fills.
pub(super) struct Key {
    pub(super) name: &'static [u8],
    pub(super) field: Field,
    pub(super) slot: Slot,
    /// `name` followed by its closing quote, little-endian in two words, and the mask of
    /// those bytes: the predicted key is checked with two loads and compares, no `memcmp`.
    pub(super) quoted: [u64; 2],
    pub(super) quoted_mask: [u64; 2],
    /// The whole member head as the canonical path expects it, `,"name":` and, for a string
    /// slot, the value's opening quote: little-endian in three words with its byte mask, so a
    /// member is recognised with three loads and compares. `open0` is the first word with
    /// `{` in place of the comma, for the object's first member (only the first key is
    /// looked for there).
    pub(super) head: [u64; 3],
    pub(super) head_mask: [u64; 3],
    pub(super) open0: u64,
    pub(super) head_len: usize,
}

/// Bytes a member head may take: the comma, quotes and colon of the longest key (14 bytes,
/// `tollIntervalId`) and a string value's opening quote.
pub(super) const HEAD_BYTES_MAX: usize = 24;

#[derive(Clone, Copy)]
pub(super) enum Slot {
    Str(usize),
    Int(usize),
}

pub(super) const fn key(name: &'static [u8], field: Field, slot: Slot) -> Key {
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
    pub(super) fn is_at(&self, b: &[u8]) -> bool {
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
pub(super) fn find_key_at(keys: &[Key], from: usize, b: &[u8]) -> Option<usize> {
    keys.get(from..)?.iter().position(|k| k.is_at(b)).map(|k| from + k)
}

/// Lane record fields in the contract's (and the lanes') order.
pub(super) const LANE_KEYS: [Key; 14] = [
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
pub(super) const EVENT_KEYS: [Key; 16] = [
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

pub(super) type Slots<'a, const S: usize, const I: usize> =
    ([Option<Cow<'a, str>>; S], [Option<i64>; I]);

/// The fast path for an object written as producers write it: no whitespace, no escapes,
/// known keys in `keys` order (absent ones skipped), each once, values of the slot's type
/// and not `null`. Each member head `,"key":` is checked with three word compares; a
/// string value is scanned 16 bytes at a time for its closing quote ([`scan_plain_string`]).
/// `None` at the first deviation; the caller then rescans the object with
/// [`scan_fields_general`], which accepts the same objects with the same result (and names
/// the reason for the others).
#[inline(always)]
pub(super) fn scan_fields_canonical<'a, const S: usize, const I: usize, const N: usize>(
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

/// Scanned bytes as text: `all_ascii` when the scan saw no byte with its high bit set (then
/// no check is needed), else checked as UTF-8. `None` if they are not UTF-8.
#[inline]
pub(super) fn scanned_text(bytes: &[u8], all_ascii: bool) -> Option<&str> {
    if all_ascii {
        debug_assert!(bytes.is_ascii());
        // SAFETY: every byte of `bytes` was seen by the scanner with its high bit clear, so
        // it is ASCII and therefore valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// A one- or two-digit integer at `b[v..]` ending at a `,` or `}`, and the index of that
/// byte: most integer fields of a record (media type, class, seats, axles) are that, and this
/// reads them inline instead of calling [`Cursor::integer`]. `None` for anything else (a
/// leading zero before a second digit, more digits, a sign, a fraction, the end of the
/// message), which goes through `Cursor::integer`.
#[inline(always)]
pub(super) fn small_integer(b: &[u8], v: usize) -> Option<(i64, usize)> {
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
pub(super) fn head_words(b: &[u8], p: usize) -> (u64, u64, u64) {
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
pub(super) fn fits(b: &[u8], at: usize, n: usize) -> bool {
    // Slices are at most isize::MAX bytes and `at` is an index into one or at most 16 past
    // its end, so neither side wraps.
    at as isize <= b.len() as isize - n as isize
}

/// The 16 bytes at `b[at..]`.
///
/// # Safety
/// `at + 16 <= b.len()`.
#[inline(always)]
pub(super) unsafe fn block_at(b: &[u8], at: usize) -> &[u8; 16] {
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
pub(super) unsafe fn word_at(b: &[u8], at: usize) -> u64 {
    debug_assert!(at + 8 <= b.len());
    // SAFETY: the caller guarantees `at + 8 <= b.len()`: the 8 bytes are inside `b`, and the
    // read is unaligned.
    u64::from_le(unsafe { std::ptr::read_unaligned(b.as_ptr().add(at) as *const u64) })
}

/// [`head_words`] when fewer than [`HEAD_BYTES_MAX`] bytes follow `p`.
#[inline]
pub(super) fn head_words_tail(b: &[u8], p: usize) -> (u64, u64, u64) {
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
pub(super) fn utf8_well_formed(b: &[u8]) -> bool {
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
pub(super) fn scan_plain_string(b: &[u8], from: usize) -> Option<(usize, NonAscii)> {
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
pub(super) struct NonAscii(pub(super) u32);

impl NonAscii {
    /// Whether the string `text` these bits were taken from is well-formed UTF-8. A plate's
    /// province character ("苏A12345") is the one non-ASCII text of nearly every record: a
    /// three-byte sequence first and ASCII after it is checked here in a few instructions
    /// (Unicode table 3-7 for the three bytes); anything else goes to [`utf8_well_formed`].
    #[inline(always)]
    pub(super) fn well_formed(self, text: &[u8]) -> bool {
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
pub(super) fn classify16_tail(b: &[u8], at: usize) -> Option<Classes16> {
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

pub(super) struct Classes16 {
    pub(super) quote: u32,
    pub(super) nonascii: u32,
    /// Backslashes and control characters.
    pub(super) stop: u32,
}

/// One bit per byte of `block` for each class. SSE2 is part of x86-64, so this needs no
/// runtime detection; elsewhere a byte loop does the same.
#[inline]
pub(super) fn classify16(block: &[u8; 16]) -> Classes16 {
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
