//! Exact deduplication of ids (`tradeId`, `topupId`, `adjustId`) over a window of record time.
//!
//! Each remembered id is one 16-byte slot: 96 bits of an XXH3-128 hash of the id (seeded per
//! id kind, so a `topupId` never collides with an equal `tradeId`) and the record's time in
//! minutes. With 96 bits, the chance that any two distinct ids among a billion collide is
//! about 6·10⁻¹²: exact for every practical purpose, at a fraction of the memory of the ids.
//!
//! The window follows the data, not the wall clock: it ends at the newest record time seen
//! and reaches `window_ms` back. Ids older than that are swept out in one pass whenever the
//! newest time has moved on by an eighth of the window; a record older than the window is
//! reported [`Verdict::TooOld`] (it can no longer be told from a replayed duplicate). The
//! whole state is a deterministic function of the records seen, so a replay from a
//! checkpoint decides the same.

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::codec::{Reader, StateError, Writer};

/// Default window: 7 days of record time (contract §3).
pub const DEFAULT_WINDOW_MS: i64 = 7 * 86_400_000;
/// Sweeps per window: a sweep is a linear pass over the table, so sweeping every 1/8 of the
/// window costs about 8 slot visits per id over its life, while expired ids linger for at
/// most 1/8 of the window (12.5% more memory than the live set).
pub const SWEEPS_PER_WINDOW: i64 = 8;

/// Which id space an id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IdKind {
    Trade = 1,
    Topup = 2,
    Adjust = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// First sighting: remembered now.
    New,
    /// Seen before within the window.
    Duplicate,
    /// Older than the window: neither new nor known to be a duplicate.
    TooOld,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// Hash bits 64..128; also the table hash.
    hi: u64,
    /// Hash bits 32..64 in the upper half, record time in minutes since 1970 in the lower.
    lo_minute: u64,
}

impl Slot {
    #[inline]
    fn minute(self) -> u32 {
        self.lo_minute as u32
    }
}

/// An id's hash and record time, as its slot would hold them: computed once per id.
#[derive(Clone, Copy)]
pub struct DedupKey(Slot);

impl DedupKey {
    #[inline]
    pub fn new(kind: IdKind, id: &str, time_ms: i64) -> DedupKey {
        let h = xxh3_128_with_seed(id.as_bytes(), kind as u64);
        let minute = time_ms.div_euclid(60_000).clamp(0, u32::MAX as i64) as u64;
        DedupKey(Slot { hi: (h >> 64) as u64, lo_minute: (h as u64 & 0xFFFF_FFFF_0000_0000) | minute })
    }
}

pub struct DedupSet {
    table: HashTable<Slot>,
    window_ms: i64,
    newest_ms: i64,
    last_sweep_ms: i64,
}

impl DedupSet {
    pub fn new(window_ms: i64) -> DedupSet {
        DedupSet { table: HashTable::new(), window_ms, newest_ms: i64::MIN, last_sweep_ms: i64::MIN }
    }

    pub fn with_capacity(window_ms: i64, ids: usize) -> DedupSet {
        DedupSet { table: HashTable::with_capacity(ids), ..DedupSet::new(window_ms) }
    }

    /// Makes room for `ids` more ids without growing the table.
    pub fn reserve(&mut self, ids: usize) {
        self.table.reserve(ids, |o| o.hi);
    }

    /// The oldest record time still inside the window.
    pub fn horizon_ms(&self) -> i64 {
        self.newest_ms.saturating_sub(self.window_ms)
    }

    /// Looks `id` up and remembers it if new.
    #[inline]
    pub fn check_and_insert(&mut self, kind: IdKind, id: &str, time_ms: i64) -> Verdict {
        self.check_and_insert_key(DedupKey::new(kind, id, time_ms), time_ms)
    }

    /// Looks the key's slot up so that its cache lines are loaded, and returns the key for
    /// [`check_and_insert_key`](Self::check_and_insert_key). Warming a group of ids in a
    /// tight loop lets the CPU overlap their cache misses, which one id at a time, between
    /// a record's other work, it cannot. Decides nothing: the id is not remembered.
    #[inline]
    pub fn warm(&self, kind: IdKind, id: &str, time_ms: i64) -> DedupKey {
        let key = DedupKey::new(kind, id, time_ms);
        std::hint::black_box(self.table.find(key.0.hi, |o| o.hi == key.0.hi).is_some());
        key
    }

    /// [`check_and_insert`](Self::check_and_insert) with the id's key already computed
    /// (same `kind`, `id` and `time_ms`).
    #[inline]
    pub fn check_and_insert_key(&mut self, key: DedupKey, time_ms: i64) -> Verdict {
        if time_ms < self.horizon_ms() {
            return Verdict::TooOld;
        }
        let s = key.0;
        let key_lo = s.lo_minute & 0xFFFF_FFFF_0000_0000;
        let found = self.table.find(s.hi, |o| o.hi == s.hi && o.lo_minute & 0xFFFF_FFFF_0000_0000 == key_lo);
        if found.is_some() {
            return Verdict::Duplicate;
        }
        self.table.insert_unique(s.hi, s, |o| o.hi);
        if time_ms > self.newest_ms {
            self.newest_ms = time_ms;
            if self.last_sweep_ms == i64::MIN {
                self.last_sweep_ms = time_ms;
            } else if time_ms - self.last_sweep_ms >= self.window_ms / SWEEPS_PER_WINDOW {
                self.sweep();
            }
        }
        Verdict::New
    }

    /// Looks `id` up without remembering it.
    pub fn contains(&self, kind: IdKind, id: &str, time_ms: i64) -> bool {
        let s = DedupKey::new(kind, id, time_ms).0;
        let key_lo = s.lo_minute & 0xFFFF_FFFF_0000_0000;
        self.table.find(s.hi, |o| o.hi == s.hi && o.lo_minute & 0xFFFF_FFFF_0000_0000 == key_lo).is_some()
    }

    /// Forgets every id older than the window.
    pub fn sweep(&mut self) {
        let horizon_minute = self.horizon_ms().div_euclid(60_000).clamp(0, u32::MAX as i64) as u32;
        self.table.retain(|s| s.minute() >= horizon_minute);
        self.last_sweep_ms = self.newest_ms;
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Heap bytes held by the table.
    pub fn allocated_bytes(&self) -> usize {
        self.table.allocation_size()
    }

    /// Appends the state to `out` (checkpoints).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out, b"GDD1");
        w.i64(self.window_ms);
        w.i64(self.newest_ms);
        w.i64(self.last_sweep_ms);
        w.u64(self.table.len() as u64);
        for s in self.table.iter() {
            w.u64(s.hi);
            w.u64(s.lo_minute);
        }
    }

    /// Reads a state written by [`write_to`](Self::write_to).
    pub fn read_from(r: &mut Reader<'_>) -> Result<DedupSet, StateError> {
        r.magic(b"GDD1")?;
        let window_ms = r.i64()?;
        let newest_ms = r.i64()?;
        let last_sweep_ms = r.i64()?;
        let n = r.len(16)?;
        let mut table = HashTable::with_capacity(n);
        for _ in 0..n {
            let s = Slot { hi: r.u64()?, lo_minute: r.u64()? };
            table.insert_unique(s.hi, s, |o| o.hi);
        }
        Ok(DedupSet { table, window_ms, newest_ms, last_sweep_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const T0: i64 = 1_790_000_000_000;

    #[test]
    fn exact_within_window_and_by_kind() {
        let mut d = DedupSet::new(DEFAULT_WINDOW_MS);
        assert_eq!(d.check_and_insert(IdKind::Trade, "A1", T0), Verdict::New);
        assert_eq!(d.check_and_insert(IdKind::Trade, "A1", T0), Verdict::Duplicate);
        // Same text, other id space: not a duplicate.
        assert_eq!(d.check_and_insert(IdKind::Topup, "A1", T0), Verdict::New);
        assert_eq!(d.check_and_insert(IdKind::Adjust, "A1", T0), Verdict::New);
        // A resend with another transTime is still the same id.
        assert_eq!(d.check_and_insert(IdKind::Trade, "A1", T0 + 5 * H), Verdict::Duplicate);
        assert_eq!(d.check_and_insert(IdKind::Trade, "A2", T0 + 1), Verdict::New);
    }

    #[test]
    fn window_follows_the_data() {
        let mut d = DedupSet::new(24 * H);
        assert_eq!(d.check_and_insert(IdKind::Trade, "old", T0), Verdict::New);
        assert_eq!(d.check_and_insert(IdKind::Trade, "new", T0 + 24 * H), Verdict::New);
        // Exactly at the horizon: still inside.
        assert_eq!(d.check_and_insert(IdKind::Trade, "old", T0), Verdict::Duplicate);
        assert_eq!(d.check_and_insert(IdKind::Trade, "newer", T0 + 30 * H), Verdict::New);
        // The sweep ran and the record is behind the horizon.
        assert_eq!(d.check_and_insert(IdKind::Trade, "old", T0), Verdict::TooOld);
        assert!(!d.contains(IdKind::Trade, "old", T0));
        assert_eq!(d.len(), 2);
        // Late but inside the window: deduplicated normally.
        assert_eq!(d.check_and_insert(IdKind::Trade, "late", T0 + 7 * H), Verdict::New);
        assert_eq!(d.check_and_insert(IdKind::Trade, "late", T0 + 7 * H), Verdict::Duplicate);
    }

    #[test]
    fn state_round_trips() {
        let mut d = DedupSet::new(DEFAULT_WINDOW_MS);
        for i in 0..10_000 {
            d.check_and_insert(IdKind::Trade, &format!("G{i}"), T0 + i * 1000);
        }
        let mut buf = Vec::new();
        d.write_to(&mut buf);
        let mut e = DedupSet::read_from(&mut Reader::new(&buf)).unwrap();
        assert_eq!(e.len(), 10_000);
        assert_eq!(e.horizon_ms(), d.horizon_ms());
        for i in 0..10_000 {
            assert_eq!(e.check_and_insert(IdKind::Trade, &format!("G{i}"), T0), Verdict::Duplicate);
        }
        assert_eq!(e.check_and_insert(IdKind::Trade, "G10000", T0), Verdict::New);
        assert!(DedupSet::read_from(&mut Reader::new(&buf[..buf.len() - 3])).is_err());
    }

    #[test]
    fn memory_per_id_is_bounded() {
        let mut d = DedupSet::new(DEFAULT_WINDOW_MS);
        let n = 1 << 20;
        for i in 0..n {
            d.check_and_insert(IdKind::Trade, &format!("G{i}"), T0);
        }
        let per_id = d.allocated_bytes() as f64 / d.len() as f64;
        // 16-byte slot + 1 control byte at hashbrown's 7/8 maximum load is the floor.
        assert!(per_id >= 17.0 * 8.0 / 7.0 - 0.01 && per_id <= 40.0, "{per_id}");
    }
}
