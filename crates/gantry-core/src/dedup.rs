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

use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::hint::prefetch;

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
        // `hi == 0` marks an empty slot; the one id in 2⁶⁴ that hashes to it takes 1 instead
        // (every time, so it is still found).
        let hi = ((h >> 64) as u64).max(1);
        DedupKey(Slot { hi, lo_minute: (h as u64 & 0xFFFF_FFFF_0000_0000) | minute })
    }
}

/// Remembered ids: open addressing with linear probing over 16-byte slots, at most 4/5 full.
/// The table has any number of slots, not a power of two: an id's home slot is its hash
/// scaled to the table (`hi × slots / 2⁶⁴`, one multiply), and the table grows by half, so
/// it is between 8/15 and 4/5 full once past its first size: 20–30 bytes per id
/// (`with_capacity` sizes it once, at 4/5).
/// An id's slot is known from its hash alone, so a group's slots can be prefetched before
/// any is looked at. `hi == 0` is an empty slot.
struct SlotTable {
    slots: Vec<Slot>,
    len: usize,
}

const EMPTY: Slot = Slot { hi: 0, lo_minute: 0 };
/// Slots of a table that has never held an id.
const SLOT_TABLE_SLOTS_MIN: usize = 16;

impl SlotTable {
    fn with_capacity(ids: usize) -> SlotTable {
        SlotTable { slots: vec![EMPTY; Self::slots_for(ids)], len: 0 }
    }

    /// Slots for `ids` ids at most 4/5 full.
    fn slots_for(ids: usize) -> usize {
        (ids.saturating_mul(5) / 4 + 1).max(SLOT_TABLE_SLOTS_MIN)
    }

    /// The slot an id's probe starts at: its hash scaled to the table (the high half of
    /// `hi × slots`), uniform over any table size without a division.
    #[inline]
    fn home(&self, hi: u64) -> usize {
        ((hi as u128 * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot after `i`, wrapping at the end.
    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// The same id: equal hash bits (the minute is the id's time, not part of it).
    #[inline]
    fn same_id(a: Slot, b: Slot) -> bool {
        a.hi == b.hi && (a.lo_minute ^ b.lo_minute) >> 32 == 0
    }

    #[inline]
    fn prefetch(&self, hi: u64) {
        prefetch(self.slots.as_ptr().wrapping_add(self.home(hi)));
    }

    /// The slot holding `s`'s id (`Ok`), or the empty slot that ends its probe run (`Err`).
    #[inline]
    fn probe(&self, s: Slot) -> Result<usize, usize> {
        let mut i = self.home(s.hi);
        loop {
            let o = self.slots[i];
            if o.hi == 0 {
                return Err(i);
            }
            if Self::same_id(o, s) {
                return Ok(i);
            }
            i = self.next(i);
        }
    }

    #[inline]
    fn contains(&self, s: Slot) -> bool {
        self.probe(s).is_ok()
    }

    /// Inserts `s` unless its id is present; `true` if it was inserted.
    #[inline]
    fn insert_new(&mut self, s: Slot) -> bool {
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            // By half: at 4/5 before, 8/15 after.
            self.rebuild(self.slots.len() + self.slots.len() / 2);
        }
        match self.probe(s) {
            Ok(_) => false,
            Err(i) => {
                self.slots[i] = s;
                self.len += 1;
                true
            }
        }
    }

    /// Drops every slot `keep` refuses, in place, in one pass: starting just after an empty
    /// slot (so no probe run crosses the start), each kept slot is lifted out and put back
    /// at the first free slot from its home, which is never past where it was. Every probe
    /// run is thereby closed up again, as if the dropped ids had never been inserted.
    /// A kept id is only moved if its run has lost a slot before it: a sweep that drops
    /// nothing only reads the table.
    fn retain(&mut self, keep: impl Fn(Slot) -> bool) {
        let start = self
            .slots
            .iter()
            .position(|s| s.hi == 0)
            .expect("a table at most 4/5 full has an empty slot");
        let mut i = start;
        // A slot of the current probe run has been emptied by this sweep.
        let mut holed = false;
        for _ in 0..self.slots.len() {
            i = self.next(i);
            let s = self.slots[i];
            if s.hi == 0 {
                holed = false;
                continue;
            }
            let kept = keep(s);
            if kept && !holed {
                continue;
            }
            self.slots[i] = EMPTY;
            holed = true;
            if kept {
                self.place(s);
            } else {
                self.len -= 1;
            }
        }
    }

    /// Moves every slot into a table of `slots` slots.
    fn rebuild(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        for s in old.into_iter().filter(|s| s.hi != 0) {
            self.place(s);
        }
    }

    /// Puts `s` in the first free slot from its home (its id known to be absent; `len` is
    /// the caller's to keep).
    #[inline]
    fn place(&mut self, s: Slot) {
        let mut i = self.home(s.hi);
        while self.slots[i].hi != 0 {
            i = self.next(i);
        }
        self.slots[i] = s;
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.hi != 0)
    }
}

pub struct DedupSet {
    table: SlotTable,
    window_ms: i64,
    newest_ms: i64,
    last_sweep_ms: i64,
}

impl DedupSet {
    pub fn new(window_ms: i64) -> DedupSet {
        DedupSet {
            table: SlotTable::with_capacity(0),
            window_ms,
            newest_ms: i64::MIN,
            last_sweep_ms: i64::MIN,
        }
    }

    pub fn with_capacity(window_ms: i64, ids: usize) -> DedupSet {
        DedupSet { table: SlotTable::with_capacity(ids), ..DedupSet::new(window_ms) }
    }

    /// Makes room for `ids` more ids without growing the table.
    pub fn reserve(&mut self, ids: usize) {
        let want = SlotTable::slots_for(self.table.len + ids);
        if want > self.table.slots.len() {
            self.table.rebuild(want);
        }
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

    /// Computes the id's key for [`check_and_insert_key`](Self::check_and_insert_key) and
    /// prefetches its slot. Warming a group of ids before deciding any lets the CPU overlap
    /// their cache misses, which one id at a time, between a record's other work, it cannot.
    /// Decides nothing: the id is not remembered.
    #[inline]
    pub fn warm(&self, kind: IdKind, id: &str, time_ms: i64) -> DedupKey {
        let key = DedupKey::new(kind, id, time_ms);
        self.table.prefetch(key.0.hi);
        key
    }

    /// [`check_and_insert`](Self::check_and_insert) with the id's key already computed
    /// (same `kind`, `id` and `time_ms`).
    #[inline]
    pub fn check_and_insert_key(&mut self, key: DedupKey, time_ms: i64) -> Verdict {
        if time_ms < self.horizon_ms() {
            return Verdict::TooOld;
        }
        if !self.table.insert_new(key.0) {
            return Verdict::Duplicate;
        }
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
        self.table.contains(DedupKey::new(kind, id, time_ms).0)
    }

    /// Forgets every id older than the window.
    pub fn sweep(&mut self) {
        let horizon_minute = self.horizon_ms().div_euclid(60_000).clamp(0, u32::MAX as i64) as u32;
        self.table.retain(|s| s.minute() >= horizon_minute);
        self.last_sweep_ms = self.newest_ms;
    }

    pub fn len(&self) -> usize {
        self.table.len
    }

    pub fn is_empty(&self) -> bool {
        self.table.len == 0
    }

    /// Heap bytes held by the table.
    pub fn allocated_bytes(&self) -> usize {
        self.table.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Appends the state to `out` (checkpoints).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out, b"GDD1");
        w.i64(self.window_ms);
        w.i64(self.newest_ms);
        w.i64(self.last_sweep_ms);
        w.u64(self.table.len as u64);
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
        // Room for half as many again (8/15 full, as right after a growth): sized for `n`
        // alone, the first id after a restart would rebuild the whole table.
        let mut table = SlotTable::with_capacity(n.saturating_add(n / 2));
        for _ in 0..n {
            let s = Slot { hi: r.u64()?, lo_minute: r.u64()? };
            if s.hi == 0 || !table.insert_new(s) {
                return Err(StateError::Corrupt("dedup state holds an empty or repeated slot"));
            }
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

    /// The table against a `HashMap` model of the same rules (window, sweeps every 1/8
    /// window) on random ids and times: same verdicts, same size, through growth and sweeps.
    #[test]
    fn agrees_with_a_map_model() {
        use proptest::prelude::*;
        use std::collections::hash_map::{Entry, HashMap};
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &proptest::collection::vec((0u32..3_000, 0i64..40 * 60_000, 0u8..3), 1..6_000),
                |ops| {
                    let window = 24 * H;
                    let mut d = DedupSet::new(window);
                    let mut model: HashMap<(u8, u32), u32> = HashMap::new();
                    let (mut newest, mut last_sweep) = (i64::MIN, i64::MIN);
                    let mut t = T0;
                    for (id, step, kind) in ops {
                        // Mostly forward in time, sometimes back by up to a day and a half.
                        t = if id % 17 == 0 { t - step * 50 } else { t + step };
                        let k = [IdKind::Trade, IdKind::Topup, IdKind::Adjust][kind as usize];
                        let want = if t < newest.saturating_sub(window) {
                            Verdict::TooOld
                        } else if let Entry::Vacant(slot) = model.entry((kind, id)) {
                            slot.insert((t / 60_000) as u32);
                            if t > newest {
                                newest = t;
                                if last_sweep == i64::MIN {
                                    last_sweep = t;
                                } else if t - last_sweep >= window / SWEEPS_PER_WINDOW {
                                    let h = ((newest - window) / 60_000) as u32;
                                    model.retain(|_, m| *m >= h);
                                    last_sweep = newest;
                                }
                            }
                            Verdict::New
                        } else {
                            Verdict::Duplicate
                        };
                        prop_assert_eq!(d.check_and_insert(k, &format!("G{id}"), t), want);
                        prop_assert_eq!(d.len(), model.len());
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    /// Sweeping in place keeps every probe run intact: on a small table with long runs
    /// (homes crowded into a few slots, wrapping past the end), every kept id is still found
    /// and no dropped one is, whatever is dropped.
    #[test]
    fn retain_closes_probe_runs() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 2_000,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &(proptest::collection::btree_set(1u64..200, 1..50), any::<u64>(), 0u64..64),
                |(ids, drop_bits, home_shift)| {
                    let mut t = SlotTable::with_capacity(40);
                    let n = t.slots.len() as u64;
                    // The smallest hash whose home is slot `h` (homes are the hash scaled to the
                    // table); the id added to it stays inside that slot's share of hashes.
                    let at_home = |h: u64| ((h as u128 * (1u128 << 64)).div_ceil(n as u128)) as u64;
                    // Homes only in the last 4 slots or the first 4 (wrapping): long runs across
                    // the end.
                    let slot = |id: u64| Slot {
                        hi: at_home((n - 4 + (id + home_shift) % 8) % n) + id,
                        lo_minute: id,
                    };
                    let ids: Vec<u64> = ids.into_iter().take(t.slots.len() * 4 / 5 - 1).collect();
                    for &id in &ids {
                        prop_assert_eq!(
                            t.home(slot(id).hi) as u64,
                            (n - 4 + (id + home_shift) % 8) % n
                        );
                        prop_assert!(t.insert_new(slot(id)));
                    }
                    let dropped = |id: u64| drop_bits >> (id % 64) & 1 == 1;
                    t.retain(|s| !dropped(s.lo_minute));
                    for &id in &ids {
                        prop_assert_eq!(t.contains(slot(id)), !dropped(id), "id {}", id);
                    }
                    prop_assert_eq!(t.len, ids.iter().filter(|&&id| !dropped(id)).count());
                    Ok(())
                },
            )
            .unwrap();
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

    /// The memory target, ≤ 32 bytes per remembered id, holds at every size from a few
    /// hundred ids up, at every point of the growth cycle (20 at the 4/5 maximum load, 30
    /// just after growing by half), also restored from
    /// a checkpoint; a table sized up front holds 20.
    #[test]
    fn memory_per_id_is_bounded() {
        let mut d = DedupSet::new(DEFAULT_WINDOW_MS);
        let (mut least, mut most) = (f64::MAX, 0f64);
        for i in 0..300_000u64 {
            d.check_and_insert(IdKind::Trade, &format!("G{i}"), T0);
            if i >= 500 {
                let per_id = d.allocated_bytes() as f64 / d.len() as f64;
                (least, most) = (least.min(per_id), most.max(per_id));
            }
        }
        assert_eq!(d.len(), 300_000);
        assert!(least >= 16.0 * 5.0 / 4.0 - 0.01 && most <= 30.1, "{least}..{most} bytes per id");
        let mut state = Vec::new();
        d.write_to(&mut state);
        let restored = DedupSet::read_from(&mut Reader::new(&state)).unwrap();
        assert!(restored.allocated_bytes() as f64 / 300_000.0 <= 30.1);
        let sized = DedupSet::with_capacity(DEFAULT_WINDOW_MS, 300_000);
        assert!(sized.allocated_bytes() as f64 / 300_000.0 <= 20.0 + 1e-3);
    }
}
