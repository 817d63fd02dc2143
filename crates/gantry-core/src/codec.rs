//! A small little-endian binary format for state snapshots (dedup sets, accounts). Each
//! section starts with a 4-byte magic so a mixed-up or truncated file fails loudly.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("state is truncated")]
    Truncated,
    #[error("state section {expected:?} expected")]
    BadMagic { expected: [u8; 4] },
    #[error("state is corrupt: {0}")]
    Corrupt(&'static str),
}

pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut Vec<u8>, magic: &[u8; 4]) -> Writer<'a> {
        out.extend_from_slice(magic);
        Writer { out }
    }
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.out.extend_from_slice(s.as_bytes());
    }
}

pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }
    pub fn remaining(&self) -> usize {
        self.b.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.b.len() < n {
            return Err(StateError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub fn magic(&mut self, m: &[u8; 4]) -> Result<(), StateError> {
        if self.take(4)? != m {
            return Err(StateError::BadMagic { expected: *m });
        }
        Ok(())
    }
    pub fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn i32(&mut self) -> Result<i32, StateError> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn str(&mut self) -> Result<&'a str, StateError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| StateError::Corrupt("string is not UTF-8"))
    }
    /// A count of items of at least `item_bytes` each, checked against what is left so a
    /// corrupt count cannot make us allocate terabytes.
    pub fn len(&mut self, item_bytes: usize) -> Result<usize, StateError> {
        let n = self.u64()? as usize;
        if n.saturating_mul(item_bytes) > self.b.len() {
            return Err(StateError::Truncated);
        }
        Ok(n)
    }
}
