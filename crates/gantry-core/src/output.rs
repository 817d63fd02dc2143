//! What processing produces: rows for the contract's tables (§4), collected in a [`Batch`].
//!
//! Rows hold no `String`s of their own: text lives in the batch's arenas and rows hold
//! [`Text`] ranges into them, so filling a batch allocates only when an arena grows. A batch
//! is cleared and reused, never rebuilt.

use crate::accounts::ListReason;

/// A range of a batch's text arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Text {
    start: u32,
    len: u32,
}

impl Text {
    pub const EMPTY: Text = Text { start: 0, len: 0 };

    /// The first `n` bytes (for prefixes of ASCII ids).
    pub fn prefix(self, n: u32) -> Text {
        Text { start: self.start, len: self.len.min(n) }
    }

    /// The `len` bytes from byte `at` of this text (for a part of an id already in the arena).
    pub fn part(self, at: u32, len: u32) -> Text {
        debug_assert!(at + len <= self.len);
        Text { start: self.start + at, len: len.min(self.len.saturating_sub(at)) }
    }
}

/// Which input topic a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    LaneTx,
    AccountEvents,
}

/// Where a record came from. The core treats it as opaque data; the edges give it meaning
/// (Kafka partition and offset, or a line number for `gantry price`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    /// The message's timestamp (ms), if it has one.
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settlement {
    pub trade_id: Text,
    pub trans_time_ms: i64,
    /// Local day number (days since 1970-01-01 in the network's zone).
    pub trade_day: i32,
    pub gantry_id: Text,
    pub toll_interval_id: Text,
    /// Empty for CPC records.
    pub card_id: Text,
    pub obu_id: Text,
    pub vehicle_plate: Text,
    pub pass_id: Text,
    pub customer_id: Text,
    pub issuer_id: Text,
    pub media_type: u8,
    /// 0 for CPC records.
    pub card_type: u8,
    pub vehicle_type: u8,
    pub vehicle_class: u8,
    pub axle_count: u8,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
    pub lane_fee: Option<i64>,
    pub tariff_version: Text,
    pub balance_after: i64,
    pub flags: u32,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SplitRow {
    pub trade_id: Text,
    pub trade_day: i32,
    pub trans_time_ms: i64,
    pub interval_id: Text,
    pub owner_id: Text,
    pub issuer_id: Text,
    pub vehicle_type: u8,
    pub media_type: u8,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Debit,
    Topup,
    Adjust,
    Open,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Debit => "debit",
            EntryKind::Topup => "topup",
            EntryKind::Adjust => "adjust",
            EntryKind::Open => "open",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LedgerRow {
    pub card_id: Text,
    pub customer_id: Text,
    pub entry_id: Text,
    pub kind: EntryKind,
    /// Signed: a debit is negative.
    pub amount: i64,
    pub balance_after: i64,
    pub time_ms: i64,
    /// Local day of `time_ms` in the network's zone.
    pub entry_day: i32,
    pub source: Source,
    /// The entry's place among its batch's ledger entries (0, 1, …): with `batch_seq`, the
    /// order the engine applied the card's movements in, which is the order of its balance
    /// chain (a late record's debit is applied after the rest of its batch, whatever its time).
    pub batch_row: u32,
    /// A debit's settlement, as its index in the batch's `settlements`: the ledger row
    /// repeats the trip's gantry, units, fees and sealed plate, so a statement reads one
    /// customer's ledger by its key instead of looking each trip up in `settlements`.
    pub trip: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RejectRow {
    pub source: Source,
    pub reason: &'static str,
    pub detail: Text,
    /// Range of the batch's raw-bytes arena (cut to [`RAW_BYTES_MAX`]).
    pub raw: Text,
    /// The record's own time if it got that far, else the message timestamp, else 0.
    pub time_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DuplicateRow {
    pub id: Text,
    pub kind: &'static str,
    pub source: Source,
    pub time_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatusRow {
    pub card_id: Text,
    pub listed: bool,
    pub reason: ListReason,
    pub time_ms: i64,
    pub source: Source,
}

/// Appends `b` to `v`. Rows copy a dozen short ids per record into the arena; for those
/// (up to 32 bytes) this is two overlapping loads and stores inline instead of a call into
/// the C library's `memcpy` and its size dispatch.
#[inline(always)]
fn append_bytes(v: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n > 32 {
        v.extend_from_slice(b);
        return;
    }
    v.reserve(n);
    let len = v.len();
    // SAFETY: `reserve` made room for `n` more bytes after `len`. Each branch reads only
    // inside `b` (offsets 0 and n − w, both ≥ 0 since n ≥ w) and writes only inside
    // `len..len + n`; the two copies overlap when n < 2w and cover every byte. `set_len`
    // then exposes exactly the `n` bytes written.
    unsafe {
        use std::ptr::{read_unaligned as rd, write_unaligned as wr};
        let (src, dst) = (b.as_ptr(), v.as_mut_ptr().add(len));
        if n >= 16 {
            let (x, y) = (rd(src as *const u128), rd(src.add(n - 16) as *const u128));
            wr(dst as *mut u128, x);
            wr(dst.add(n - 16) as *mut u128, y);
        } else if n >= 8 {
            let (x, y) = (rd(src as *const u64), rd(src.add(n - 8) as *const u64));
            wr(dst as *mut u64, x);
            wr(dst.add(n - 8) as *mut u64, y);
        } else if n >= 4 {
            let (x, y) = (rd(src as *const u32), rd(src.add(n - 4) as *const u32));
            wr(dst as *mut u32, x);
            wr(dst.add(n - 4) as *mut u32, y);
        } else if n > 0 {
            let (x, y, z) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = x;
            *dst.add(n / 2) = y;
            *dst.add(n - 1) = z;
        }
        v.set_len(len + n);
    }
}

/// Raw bytes kept per reject (contract §3: cut to 4 KiB).
pub const RAW_BYTES_MAX: usize = 4096;

/// How many records of each outcome a batch holds, per input topic; reconciliation checks
/// `records == settled + rejected + duplicates` for lanes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub messages: u64,
    pub lane_records: u64,
    pub settled: u64,
    pub lane_rejected: u64,
    pub lane_duplicates: u64,
    pub account_events: u64,
    pub events_applied: u64,
    pub events_rejected: u64,
    pub events_duplicates: u64,
    /// Lane records older than the dedup window that were parked for the lookup of what is
    /// already settled (each is then settled or a duplicate, and counted as such too).
    pub lane_late: u64,
}

/// Rows a parked late record is counted as before it is decided (see [`Batch::rows`]): a
/// settlement, a split and a ledger entry, what a typical settled record adds.
pub const LATE_RECORD_ROWS: usize = 3;

/// A lane record older than the dedup window (contract §3, late records), parked by the
/// engine until the pipeline has looked up whether its `tradeId` was settled in an earlier
/// batch; [`crate::Engine::settle_late`] then settles it or records it as a duplicate. Its
/// bytes are kept whole (a reject's are cut to [`RAW_BYTES_MAX`]) so it can be parsed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateRecord {
    pub trade_id: Text,
    /// Local day of its `transTime`: the leading column of `settlements`' key, so the
    /// lookup reads by key.
    pub trade_day: i32,
    /// Range in the batch's late-records arena.
    raw: Text,
    pub source: Source,
}

impl LateRecord {
    /// Its bytes in `arena`, the late-records arena of its batch (see [`Batch::take_late`]).
    pub fn bytes<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.raw.start as usize..(self.raw.start + self.raw.len) as usize]
    }
}

/// Which batch (and which filling of it, since [`Batch::clear`]) a text range belongs to:
/// unique within the process. Identity, not content: it never makes two batches unequal.
#[derive(Clone, Copy, Debug)]
pub struct BatchId(u64);

impl BatchId {
    fn next() -> BatchId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        BatchId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl Default for BatchId {
    fn default() -> Self {
        BatchId::next()
    }
}

impl PartialEq for BatchId {
    fn eq(&self, _: &BatchId) -> bool {
        true
    }
}

/// A row of `clearing_daily`: one batch's splits summed per (day, owner, issuer, class,
/// medium). Gantry writes the rollups itself, tagged with their batch like every other row,
/// so a batch is in a rollup wholly or not at all, as in its source table (a materialized
/// view could fail after its source's part was written, and a retry could not tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClearingRow {
    pub trade_day: i32,
    pub owner_id: Text,
    pub issuer_id: Text,
    pub vehicle_type: u8,
    pub media_type: u8,
    /// Unit passages.
    pub n: u64,
    /// Transactions with at least one unit here: summed over issuers and classes, an
    /// owner's transactions of the day (a trade has one issuer and class, so it is counted
    /// in one row of each owner it passed), which `n` cannot give.
    pub trades: u64,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
}

/// A row of `customer_usage_daily`: one batch's ETC trips and top-ups summed per (day,
/// customer, card). See [`ClearingRow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub day: i32,
    pub customer_id: Text,
    pub card_id: Text,
    pub trips: u64,
    pub fee: i64,
    pub discount_fee: i64,
    pub topups: u64,
    pub topup_amount: i64,
}

/// A row of `card_activity`: what one batch did to one card — its customer, the balance
/// after the card's last ledger entry in the batch, its last debit (the trip) and its last
/// listing change. The card-keyed way in to a card (the ledger is ordered by customer): a
/// card lookup reads the card's rows here, one per batch that touched it, and takes the
/// newest of each. See [`ClearingRow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardRow {
    pub card_id: Text,
    pub customer_id: Text,
    /// Ledger entries of the card in the batch (0: only its listing changed).
    pub entries: u32,
    /// After the card's last entry in the batch (chain order: `last_row`).
    pub balance_after: i64,
    /// `batch_row` of that entry.
    pub last_row: u32,
    /// The card's last debit in the batch by (time, `batch_row`), if any: its ledger index
    /// in the batch (the encoder reads the trip from its ledger row's settlement).
    pub last_debit: Option<u32>,
    /// The card's last status row in the batch by time, if any: its index in `status`.
    pub last_status: Option<u32>,
}

/// Whole seconds of a time in ms: what the tables' `DateTime` columns keep, so ties are
/// broken as a query over them breaks them.
fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Rows summed by key, in the order their keys first appear.
struct Rollup<K, R> {
    index: hashbrown::HashMap<K, usize>,
    rows: Vec<R>,
}

impl<K, R> Default for Rollup<K, R> {
    fn default() -> Self {
        Rollup { index: hashbrown::HashMap::new(), rows: Vec::new() }
    }
}

impl<K: std::hash::Hash + Eq, R> Rollup<K, R> {
    /// The row of `key` and its index, made by `new` the first time.
    fn row(&mut self, key: K, new: impl FnOnce() -> R) -> (usize, &mut R) {
        let rows = &mut self.rows;
        let i = *self.index.entry(key).or_insert_with(|| {
            rows.push(new());
            rows.len() - 1
        });
        (i, &mut self.rows[i])
    }
}

#[derive(Default, Debug, PartialEq)]
pub struct Batch {
    /// Changes whenever the arenas are emptied, so text ranges cached for reuse (see
    /// [`crate::engine`]) are never taken from an earlier filling.
    id: BatchId,
    text: String,
    raw: Vec<u8>,
    pub settlements: Vec<Settlement>,
    pub splits: Vec<SplitRow>,
    pub ledger: Vec<LedgerRow>,
    pub rejects: Vec<RejectRow>,
    pub duplicates: Vec<DuplicateRow>,
    pub status: Vec<StatusRow>,
    /// The rollups of this batch's rows, filled by [`Batch::roll_up`] when it closes.
    pub clearing: Vec<ClearingRow>,
    pub usage: Vec<UsageRow>,
    pub cards: Vec<CardRow>,
    /// Lane records parked as late, in the order met (see [`LateRecord`]).
    pub late: Vec<LateRecord>,
    late_raw: Vec<u8>,
    pub counts: Counts,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// A batch with room for about `records` lane records, so filling it does not grow it.
    pub fn with_capacity(records: usize) -> Batch {
        Batch {
            id: BatchId::next(),
            text: String::with_capacity(records * 160),
            raw: Vec::with_capacity(records / 100 * 512),
            settlements: Vec::with_capacity(records),
            splits: Vec::with_capacity(records * 5 / 4),
            ledger: Vec::with_capacity(records),
            rejects: Vec::with_capacity(records / 50 + 16),
            duplicates: Vec::with_capacity(records / 20 + 16),
            status: Vec::with_capacity(records / 20 + 16),
            clearing: Vec::new(),
            usage: Vec::new(),
            cards: Vec::new(),
            late: Vec::new(),
            late_raw: Vec::new(),
            counts: Counts::default(),
        }
    }

    pub fn clear(&mut self) {
        self.id = BatchId::next();
        self.text.clear();
        self.raw.clear();
        self.settlements.clear();
        self.splits.clear();
        self.ledger.clear();
        self.rejects.clear();
        self.duplicates.clear();
        self.status.clear();
        self.clearing.clear();
        self.usage.clear();
        self.cards.clear();
        self.late.clear();
        self.late_raw.clear();
        self.counts = Counts::default();
    }

    /// Fills the rollups from this batch's rows: `clearing_daily` from the splits,
    /// `customer_usage_daily` from the ETC settlements and the top-ups in the ledger (what
    /// materialized views used to compute, now per batch), `card_activity` from the ledger
    /// and the status rows. A pure function of the rows, so a replayed batch rolls up the
    /// same; called once, when the batch closes.
    pub fn roll_up(&mut self) {
        debug_assert!(
            self.clearing.is_empty() && self.usage.is_empty() && self.cards.is_empty(),
            "rolled up twice"
        );
        self.clearing = self.clearing_rows();
        self.usage = self.usage_rows();
        self.cards = self.card_rows();
    }

    fn card_rows(&self) -> Vec<CardRow> {
        let new = |card_id, customer_id| CardRow {
            card_id,
            customer_id,
            entries: 0,
            balance_after: 0,
            last_row: 0,
            last_debit: None,
            last_status: None,
        };
        let mut cards: Rollup<&[u8], CardRow> = Rollup::default();
        for (i, l) in self.ledger.iter().enumerate() {
            let (_, r) = cards.row(self.text_bytes(l.card_id), || new(l.card_id, l.customer_id));
            // Ledger rows are in chain order (`batch_row` ascending).
            debug_assert!(r.entries == 0 || l.batch_row > r.last_row, "ledger out of chain order");
            r.entries += 1;
            (r.balance_after, r.last_row) = (l.balance_after, l.batch_row);
            let later = |d: u32| {
                let d = &self.ledger[d as usize];
                (secs(l.time_ms), l.batch_row) > (secs(d.time_ms), d.batch_row)
            };
            if l.kind == EntryKind::Debit && r.last_debit.is_none_or(later) {
                r.last_debit = Some(i as u32);
            }
        }
        for (i, st) in self.status.iter().enumerate() {
            // A listing changed by an event that moved no balance (`lost`) has no ledger
            // row in the batch: its row names no customer (another batch's does).
            let (_, r) = cards.row(self.text_bytes(st.card_id), || new(st.card_id, Text::EMPTY));
            let later = |p: u32| secs(st.time_ms) >= secs(self.status[p as usize].time_ms);
            if r.last_status.is_none_or(later) {
                r.last_status = Some(i as u32);
            }
        }
        cards.rows
    }

    fn clearing_rows(&self) -> Vec<ClearingRow> {
        let mut clearing = Rollup::default();
        // The trade each row last counted: a trade's splits are contiguous (pushed when it
        // is priced), so a row meets each of its trades in one run.
        let mut last_trade: Vec<&[u8]> = Vec::new();
        for s in &self.splits {
            let owner = self.text_bytes(s.owner_id);
            let key =
                (s.trade_day, owner, self.text_bytes(s.issuer_id), s.vehicle_type, s.media_type);
            let (i, r) = clearing.row(key, || ClearingRow {
                trade_day: s.trade_day,
                owner_id: s.owner_id,
                issuer_id: s.issuer_id,
                vehicle_type: s.vehicle_type,
                media_type: s.media_type,
                n: 0,
                trades: 0,
                pay_fee: 0,
                discount_fee: 0,
                fee: 0,
            });
            let trade = self.text_bytes(s.trade_id);
            if i == last_trade.len() {
                last_trade.push(trade);
                r.trades += 1;
            } else if last_trade[i] != trade {
                last_trade[i] = trade;
                r.trades += 1;
            }
            r.n += 1;
            r.pay_fee += s.pay_fee;
            r.discount_fee += s.discount_fee;
            r.fee += s.fee;
        }
        clearing.rows
    }

    fn usage_rows(&self) -> Vec<UsageRow> {
        let mut usage = Rollup::default();
        let usage_row = |day, customer_id, card_id| UsageRow {
            day,
            customer_id,
            card_id,
            trips: 0,
            fee: 0,
            discount_fee: 0,
            topups: 0,
            topup_amount: 0,
        };
        for s in self.settlements.iter().filter(|s| s.card_id.len > 0) {
            let key = (s.trade_day, self.text_bytes(s.customer_id), self.text_bytes(s.card_id));
            let (_, r) = usage.row(key, || usage_row(s.trade_day, s.customer_id, s.card_id));
            r.trips += 1;
            r.fee += s.fee;
            r.discount_fee += s.discount_fee;
        }
        for l in self.ledger.iter().filter(|l| l.kind == EntryKind::Topup) {
            let key = (l.entry_day, self.text_bytes(l.customer_id), self.text_bytes(l.card_id));
            let (_, r) = usage.row(key, || usage_row(l.entry_day, l.customer_id, l.card_id));
            r.topups += 1;
            r.topup_amount += l.amount;
        }
        usage.rows
    }

    /// This filling of the batch (see [`BatchId`]).
    #[inline]
    pub fn id(&self) -> BatchId {
        self.id
    }

    /// Rows of all tables, a parked late record counted as the rows it will likely add
    /// once decided (so a batch of late records closes near its row limit too).
    pub fn rows(&self) -> usize {
        self.settlements.len()
            + self.splits.len()
            + self.ledger.len()
            + self.rejects.len()
            + self.duplicates.len()
            + self.status.len()
            + self.late.len() * LATE_RECORD_ROWS
    }

    /// Bytes held in the arenas (a batch closes on bytes as well as rows).
    pub fn arena_bytes(&self) -> usize {
        self.text.len() + self.raw.len() + self.late_raw.len()
    }

    /// Parks a late lane record (see [`LateRecord`]); `raw` is the record's own bytes.
    pub fn push_late(&mut self, trade_id: &str, trade_day: i32, raw: &[u8], source: Source) {
        let trade_id = self.push_text(trade_id);
        let start = self.late_raw.len() as u32;
        self.late_raw.extend_from_slice(raw);
        let raw = Text { start, len: raw.len() as u32 };
        self.late.push(LateRecord { trade_id, trade_day, raw, source });
    }

    /// The bytes of a parked late record.
    pub fn late_raw(&self, r: &LateRecord) -> &[u8] {
        r.bytes(&self.late_raw)
    }

    /// Takes the parked late records out of the batch (to settle them into it), leaving
    /// it none; [`Batch::put_late`] puts them back.
    pub fn take_late(&mut self) -> (Vec<LateRecord>, Vec<u8>) {
        (std::mem::take(&mut self.late), std::mem::take(&mut self.late_raw))
    }

    pub fn put_late(&mut self, (late, raw): (Vec<LateRecord>, Vec<u8>)) {
        debug_assert!(self.late.is_empty(), "late records parked while they were being settled");
        self.late = late;
        self.late_raw = raw;
    }

    #[inline]
    pub fn push_text(&mut self, s: &str) -> Text {
        let start = self.text.len() as u32;
        // SAFETY: `s` is UTF-8, so appending its bytes keeps the arena UTF-8.
        append_bytes(unsafe { self.text.as_mut_vec() }, s.as_bytes());
        Text { start, len: s.len() as u32 }
    }

    /// Appends formatted text (`write!`) and returns its range.
    pub fn push_fmt(&mut self, args: std::fmt::Arguments<'_>) -> Text {
        use std::fmt::Write;
        let start = self.text.len() as u32;
        let _ = self.text.write_fmt(args);
        Text { start, len: self.text.len() as u32 - start }
    }

    pub fn push_raw(&mut self, b: &[u8]) -> Text {
        let start = self.raw.len() as u32;
        let b = &b[..b.len().min(RAW_BYTES_MAX)];
        append_bytes(&mut self.raw, b);
        Text { start, len: b.len() as u32 }
    }

    #[inline]
    pub fn text(&self, t: Text) -> &str {
        &self.text[t.start as usize..(t.start + t.len) as usize]
    }

    /// The text's bytes (no char-boundary checks: for encoders that copy bytes anyway).
    #[inline]
    pub fn text_bytes(&self, t: Text) -> &[u8] {
        &self.text.as_bytes()[t.start as usize..(t.start + t.len) as usize]
    }

    #[inline]
    pub fn raw(&self, t: Text) -> &[u8] {
        &self.raw[t.start as usize..(t.start + t.len) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_bytes_copies_every_length_exactly() {
        let src: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37).wrapping_add(1)).collect();
        let mut v = Vec::new();
        let mut want = Vec::new();
        for start in 0..5 {
            for n in 0..=70 {
                let b = &src[start..start + n];
                append_bytes(&mut v, b);
                want.extend_from_slice(b);
                assert_eq!(v, want, "start {start} length {n}");
            }
        }
    }
}
