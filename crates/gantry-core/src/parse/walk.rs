//! The general JSON walk: any valid object (whitespace, escapes, keys in any order, unknown
//! members, `null`s), read into the same slots as the canonical path of `scan.rs`; a
//! differential proptest holds the two to the same result.

use super::*;

pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
    pub(super) i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(super) fn syntax(&self) -> ObjError {
        ObjError::Syntax(RejectReason::NotJson { at: self.i as u32 })
    }

    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    pub(super) fn eat(&mut self, ch: u8) -> ObjResult<()> {
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
    pub(super) fn string(&mut self) -> ObjResult<Cow<'a, str>> {
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
    pub(super) fn text(&self, start: usize, end: usize, high: u64) -> ObjResult<&'a str> {
        scanned_text(&self.b[start..end], high & HI == 0)
            .ok_or(ObjError::Syntax(RejectReason::NotUtf8))
    }

    /// Slow path: the string from `start` has escapes; the cursor is on the first `\`.
    #[cold]
    pub(super) fn string_with_escapes(&mut self, start: usize) -> ObjResult<Cow<'a, str>> {
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

    pub(super) fn hex4(&mut self) -> ObjResult<u32> {
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
    pub(super) fn literal(&mut self, word: &[u8]) -> ObjResult<()> {
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
    pub(super) fn integer(&mut self, field: Field) -> ObjResult<i64> {
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
    pub(super) fn integer_slow(&mut self, field: Field) -> ObjResult<i64> {
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

    pub(super) fn skip_number_tail(&mut self) -> ObjResult<()> {
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

    /// Skips any JSON value (an unknown field's), at most [`SKIP_DEPTH_MAX`] deep.
    pub(super) fn skip_value(&mut self, depth: u32) -> ObjResult<()> {
        if depth > SKIP_DEPTH_MAX {
            return Err(self.syntax());
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.skip_object(depth),
            Some(b'[') => self.skip_array(depth),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.skip_number(),
            _ => Err(self.syntax()),
        }
    }

    /// Steps over the opening bracket the cursor is on; `true` (past it) if `close` follows
    /// at once: an empty object or array.
    fn opens_empty(&mut self, close: u8) -> bool {
        self.i += 1;
        self.ws();
        let empty = self.peek() == Some(close);
        if empty {
            self.i += 1;
        }
        empty
    }

    /// Skips an object; the cursor is on its `{`.
    fn skip_object(&mut self, depth: u32) -> ObjResult<()> {
        if self.opens_empty(b'}') {
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
            if self.list_ends(b'}')? {
                return Ok(());
            }
        }
    }

    /// Skips an array; the cursor is on its `[`.
    fn skip_array(&mut self, depth: u32) -> ObjResult<()> {
        if self.opens_empty(b']') {
            return Ok(());
        }
        loop {
            self.skip_value(depth + 1)?;
            if self.list_ends(b']')? {
                return Ok(());
            }
        }
    }

    /// After a member or element: `true` past the closing `close`, `false` past a `,`.
    fn list_ends(&mut self, close: u8) -> ObjResult<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(self.syntax()),
        }
    }

    /// Skips a number (JSON's grammar: no leading zeros, no bare `-`).
    fn skip_number(&mut self) -> ObjResult<()> {
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

    /// A string-valued field: `null` counts as absent; any other type is wrong.
    #[inline]
    pub(super) fn opt_string(&mut self, field: Field) -> ObjResult<Option<Cow<'a, str>>> {
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
    pub(super) fn opt_integer(&mut self, field: Field) -> ObjResult<Option<i64>> {
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
    pub(super) fn object(
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

/// Scans an object's members into string and integer slots per `keys`: first the way lanes
/// write records, then, if the object is written any other way, in full generality.
#[inline]
pub(super) fn scan_fields<'a, const S: usize, const I: usize, const N: usize>(
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

/// Any valid JSON object: whitespace, keys in any order, unknown members, `null`s.
#[inline]
pub(super) fn scan_fields_general<'a, const S: usize, const I: usize>(
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
pub(super) fn first_sighting(seen: &mut u64, field: Field) -> ObjResult<()> {
    let bit = 1u64 << field as u32;
    if *seen & bit != 0 {
        return Err(ObjError::Syntax(RejectReason::DuplicateField(field)));
    }
    *seen |= bit;
    Ok(())
}
