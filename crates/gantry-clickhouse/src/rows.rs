//! Native-format encodings of the core's output rows, written by hand.
//!
//! An INSERT body is one block of ClickHouse's `Native` format: the column count and row
//! count, then per column its name, its type and all its values. ClickHouse reads such a
//! block a column at a time straight into its own column buffers; `RowBinary` made it
//! deserialise field by field through a virtual call each, which was about a third of its
//! CPU for an insert on 18.16 (`bench/PERFORMANCE.md`). One block per INSERT
//! is also one part, which is what makes a batch all-or-nothing in a table.
//!
//! Each table has a column list (name and type, the types exactly as in `schema/`; the
//! names are listed in the INSERT, so the table's own column order does not matter) and an
//! encoder that appends one row, a field to each column's buffer, copying text straight
//! from the batch's arena.
//!
//! Native, as sent over HTTP (no block info, no per-column serialization info): `String` is
//! a LEB128 length and the bytes; integers are little-endian; `Nullable(T)` is a null map (a
//! byte per row, 1 = NULL) followed by every row's `T` (0 where NULL); `DateTime` is u32
//! seconds and `Date` u16 days since 1970-01-01. Golden blocks under `tests/native/` pin
//! this: a unit test (`lib.rs`) checks the encoder still writes them byte for byte, and they
//! read back as the golden rows (`tests/native/*.tsv`) on 18.16 (`tests/tests/native.rs`)
//! and on current ClickHouse (`tests/sql_compat.py`, through chdb).

use gantry_core::output::{
    Batch, CardRow, ClearingRow, DuplicateRow, LedgerRow, RejectRow, Settlement, SplitRow,
    StatusRow, UsageRow,
};

use crate::TopicNames;

/// The batch that wrote a row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tag {
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

/// `DateTime`: seconds since 1970 as u32, clamped to its range.
pub(crate) fn datetime(ms: i64) -> u32 {
    (ms.div_euclid(1000)).clamp(0, u32::MAX as i64) as u32
}

/// `Date`: days since 1970 as u16, clamped to its range.
pub(crate) fn date(day: i64) -> u16 {
    day.clamp(0, u16::MAX as i64) as u16
}

/// A table's columns: name and ClickHouse type, in the order its encoder writes them.
pub type ColumnList = &'static [(&'static str, &'static str)];

const NULLABLE_I64: &str = "Nullable(Int64)";

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The column buffers of one Native block being filled row by row: one buffer per column,
/// two for a `Nullable` one (its null map, then its values). A buffer that reaches
/// [`COLUMN_CHUNK_BYTES`] is set aside and a fresh one started, so a column is a list of
/// chunks of the same size: the allocator hands back the chunks of the previous INSERT
/// (one buffer per column of a whole group came as fresh pages from the kernel each time;
/// zeroing them was 16% of the encoder's time).
pub(crate) struct Columns {
    list: ColumnList,
    bufs: Vec<Vec<u8>>,
    /// Full chunks of each buffer, in order.
    full: Vec<Vec<Vec<u8>>>,
    rows: usize,
}

/// Size at which a column buffer is set aside: the size the HTTP client is handed at once,
/// and small enough for the allocator to keep and reuse.
const COLUMN_CHUNK_BYTES: usize = crate::INSERT_CHUNK_BYTES;

/// Rows between checks of the buffers' sizes. A field is at most a reject's raw bytes
/// (4 KiB), so a chunk overshoots by at most this many fields' worth, which its slack covers
/// or one growth absorbs.
const ROWS_PER_CHUNK_CHECK: usize = 64;

/// Room a chunk has beyond [`COLUMN_CHUNK_BYTES`] for the rows before the next check.
const CHUNK_SLACK_BYTES: usize = 16 * 1024;

/// Bytes per row a text column's first chunk is sized for (when the block is smaller than
/// a chunk): about the width of the longer ids.
const TEXT_BYTES_PER_ROW_RESERVED: usize = 32;

impl Columns {
    pub(crate) fn new(list: ColumnList, rows: usize) -> Columns {
        let mut bufs = Vec::with_capacity(list.len() + 2);
        let chunk =
            |bytes: usize| Vec::with_capacity(bytes.min(COLUMN_CHUNK_BYTES) + CHUNK_SLACK_BYTES);
        for (_, ty) in list {
            let width = match *ty {
                "UInt8" => 1,
                "UInt16" | "Date" => 2,
                "UInt32" | "Int32" | "DateTime" => 4,
                "UInt64" | "Int64" => 8,
                NULLABLE_I64 => {
                    bufs.push(chunk(rows));
                    8
                }
                _ => TEXT_BYTES_PER_ROW_RESERVED,
            };
            bufs.push(chunk(rows * width));
        }
        let full = (0..bufs.len()).map(|_| Vec::new()).collect();
        Columns { list, bufs, full, rows: 0 }
    }

    /// A cursor at the first column, for one row's fields in column-list order.
    #[inline]
    pub(crate) fn row(&mut self) -> Cursor<'_> {
        self.rows += 1;
        if self.rows.is_multiple_of(ROWS_PER_CHUNK_CHECK) {
            self.set_aside_full_chunks();
        }
        Cursor { bufs: &mut self.bufs, i: 0 }
    }

    #[cold]
    fn set_aside_full_chunks(&mut self) {
        for (buf, full) in self.bufs.iter_mut().zip(&mut self.full) {
            if buf.len() >= COLUMN_CHUNK_BYTES {
                full.push(std::mem::replace(
                    buf,
                    Vec::with_capacity(COLUMN_CHUNK_BYTES + CHUNK_SLACK_BYTES),
                ));
            }
        }
    }

    /// The block as INSERT body pieces: the header, then per column its name and type and
    /// its chunks (moved, not copied).
    pub(crate) fn finish(self) -> Vec<Vec<u8>> {
        let (list, rows) = (self.list, self.rows);
        let mut pieces = Vec::with_capacity(self.bufs.len() * 2 + 1);
        let mut head = Vec::with_capacity(64);
        leb128(&mut head, list.len());
        leb128(&mut head, rows);
        let mut bufs = self.bufs.into_iter().zip(self.full).map(|(last, mut full)| {
            full.push(last);
            full
        });
        for (name, ty) in list {
            leb128(&mut head, name.len());
            head.extend_from_slice(name.as_bytes());
            leb128(&mut head, ty.len());
            head.extend_from_slice(ty.as_bytes());
            pieces.push(std::mem::replace(&mut head, Vec::with_capacity(64)));
            if *ty == NULLABLE_I64 {
                pieces.extend(bufs.next().into_iter().flatten());
            }
            pieces.extend(bufs.next().into_iter().flatten());
        }
        debug_assert!(bufs.next().is_none(), "a buffer per column");
        pieces
    }
}

/// One appender per fixed-width integer type: its little-endian bytes to the next column.
macro_rules! little_endian {
    ($($t:ident),*) => {$(
        #[inline]
        fn $t(&mut self, v: $t) -> &mut Self {
            self.next().extend_from_slice(&v.to_le_bytes());
            self
        }
    )*};
}

/// Writes one row: each call appends a field to the next column's buffer.
pub(crate) struct Cursor<'c> {
    bufs: &'c mut [Vec<u8>],
    i: usize,
}

impl Cursor<'_> {
    #[inline]
    fn next(&mut self) -> &mut Vec<u8> {
        let b = &mut self.bufs[self.i];
        self.i += 1;
        b
    }
    #[inline]
    fn str(&mut self, s: &[u8]) -> &mut Self {
        let b = self.next();
        leb128(b, s.len());
        b.extend_from_slice(s);
        self
    }
    #[inline]
    fn u8(&mut self, v: u8) -> &mut Self {
        self.next().push(v);
        self
    }
    little_endian! {u16, u32, i32, i64, u64}
    #[inline]
    fn nullable_i64(&mut self, v: Option<i64>) -> &mut Self {
        self.u8(v.is_none() as u8).i64(v.unwrap_or(0))
    }
    #[inline]
    fn tag(&mut self, t: Tag) -> &mut Self {
        self.u16(t.gantry_partition).u64(t.batch_seq)
    }
}

pub(crate) const SETTLEMENT_COLUMNS: ColumnList = &[
    ("trade_id", "String"),
    ("trans_time", "DateTime"),
    ("trade_date", "Date"),
    ("gantry_id", "String"),
    ("toll_interval_id", "String"),
    ("card_id", "String"),
    ("obu_id", "String"),
    ("vehicle_plate", "String"),
    ("plate_enc", "String"),
    ("plate_hash", "String"),
    ("pass_id", "String"),
    ("customer_id", "String"),
    ("issuer_id", "String"),
    ("media_type", "UInt8"),
    ("card_type", "UInt8"),
    ("vehicle_type", "UInt8"),
    ("vehicle_class", "UInt8"),
    ("axle_count", "UInt8"),
    ("pay_fee", "Int64"),
    ("discount_fee", "Int64"),
    ("fee", "Int64"),
    ("lane_fee", NULLABLE_I64),
    ("tariff_version", "String"),
    ("balance_after", "Int64"),
    ("flags", "UInt32"),
    ("source_partition", "Int32"),
    ("source_offset", "Int64"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
];

/// A settlement row. The plate is never written in clear (contract §5.2): `vehicle_plate`
/// stays empty (the column predates sealing), `plate_enc` and `plate_hash` hold it sealed,
/// or nothing without a key ring.
pub(crate) fn settlement_row(
    b: &Batch,
    s: &Settlement,
    plates: Option<&gantry_pii::Keyring>,
    t: Tag,
    c: &mut Columns,
) {
    match plates {
        Some(k) => k.with_sealed(b.text_bytes(s.vehicle_plate), |enc, hash| {
            settlement_fields(b, s, (enc, hash), t, c)
        }),
        None => settlement_fields(b, s, (&[], &[]), t, c),
    }
}

fn settlement_fields(b: &Batch, s: &Settlement, plate: (&[u8], &[u8]), t: Tag, c: &mut Columns) {
    let x = |t| b.text_bytes(t);
    let (plate_enc, plate_hash) = plate;
    c.row()
        .str(x(s.trade_id))
        .u32(datetime(s.trans_time_ms))
        .u16(date(s.trade_day as i64))
        .str(x(s.gantry_id))
        .str(x(s.toll_interval_id))
        .str(x(s.card_id))
        .str(x(s.obu_id))
        .str(b"")
        .str(plate_enc)
        .str(plate_hash)
        .str(x(s.pass_id))
        .str(x(s.customer_id))
        .str(x(s.issuer_id))
        .u8(s.media_type)
        .u8(s.card_type)
        .u8(s.vehicle_type)
        .u8(s.vehicle_class)
        .u8(s.axle_count)
        .i64(s.pay_fee)
        .i64(s.discount_fee)
        .i64(s.fee)
        .nullable_i64(s.lane_fee)
        .str(x(s.tariff_version))
        .i64(s.balance_after)
        .u32(s.flags)
        .i32(s.source.partition)
        .i64(s.source.offset)
        .tag(t);
}

pub(crate) const SPLIT_COLUMNS: ColumnList = &[
    ("trade_id", "String"),
    ("trade_date", "Date"),
    ("trans_time", "DateTime"),
    ("interval_id", "String"),
    ("owner_id", "String"),
    ("issuer_id", "String"),
    ("vehicle_type", "UInt8"),
    ("media_type", "UInt8"),
    ("pay_fee", "Int64"),
    ("discount_fee", "Int64"),
    ("fee", "Int64"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
];

pub(crate) fn split_row(b: &Batch, s: &SplitRow, t: Tag, c: &mut Columns) {
    let x = |t| b.text_bytes(t);
    c.row()
        .str(x(s.trade_id))
        .u16(date(s.trade_day as i64))
        .u32(datetime(s.trans_time_ms))
        .str(x(s.interval_id))
        .str(x(s.owner_id))
        .str(x(s.issuer_id))
        .u8(s.vehicle_type)
        .u8(s.media_type)
        .i64(s.pay_fee)
        .i64(s.discount_fee)
        .i64(s.fee)
        .tag(t);
}

pub(crate) const LEDGER_COLUMNS: ColumnList = &[
    ("card_id", "String"),
    ("customer_id", "String"),
    ("entry_id", "String"),
    ("kind", "String"),
    ("amount", "Int64"),
    ("balance_after", "Int64"),
    ("time", "DateTime"),
    ("entry_date", "Date"),
    ("source_partition", "Int32"),
    ("source_offset", "Int64"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
    ("batch_row", "UInt32"),
    ("gantry_id", "String"),
    ("toll_interval_id", "String"),
    ("pay_fee", "Int64"),
    ("discount_fee", "Int64"),
    ("plate_enc", "String"),
];

/// A ledger row; a debit repeats its trip's gantry, units, fees and plate (sealed as in
/// `settlements`, or empty without a key ring), other entries leave them empty.
pub(crate) fn ledger_row(
    b: &Batch,
    l: &LedgerRow,
    plates: Option<&gantry_pii::Keyring>,
    t: Tag,
    c: &mut Columns,
) {
    let trip = l.trip.map(|i| &b.settlements[i as usize]);
    with_trip_plate(b, trip, plates, |enc| ledger_fields(b, l, trip, enc, t, c))
}

/// Calls `f` with the sealed plate of `trip` (empty without a trip or a key ring).
fn with_trip_plate(
    b: &Batch,
    trip: Option<&Settlement>,
    plates: Option<&gantry_pii::Keyring>,
    f: impl FnOnce(&[u8]),
) {
    match (trip, plates) {
        (Some(s), Some(k)) => k.with_sealed(b.text_bytes(s.vehicle_plate), |enc, _| f(enc)),
        _ => f(&[]),
    }
}

fn ledger_fields(
    b: &Batch,
    l: &LedgerRow,
    trip: Option<&Settlement>,
    plate_enc: &[u8],
    t: Tag,
    c: &mut Columns,
) {
    let x = |t| b.text_bytes(t);
    let (gantry, units) =
        trip.map_or((&b""[..], &b""[..]), |s| (x(s.gantry_id), x(s.toll_interval_id)));
    let (pay, discount) = trip.map_or((0, 0), |s| (s.pay_fee, s.discount_fee));
    c.row()
        .str(x(l.card_id))
        .str(x(l.customer_id))
        .str(x(l.entry_id))
        .str(l.kind.name().as_bytes())
        .i64(l.amount)
        .i64(l.balance_after)
        .u32(datetime(l.time_ms))
        .u16(date(l.entry_day as i64))
        .i32(l.source.partition)
        .i64(l.source.offset)
        .tag(t)
        .u32(l.batch_row)
        .str(gantry)
        .str(units)
        .i64(pay)
        .i64(discount)
        .str(plate_enc);
}

pub(crate) const REJECT_COLUMNS: ColumnList = &[
    ("source", "String"),
    ("reason", "String"),
    ("detail", "String"),
    ("raw", "String"),
    ("time", "DateTime"),
    ("topic", "String"),
    ("source_partition", "Int32"),
    ("source_offset", "Int64"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
];

pub(crate) fn reject_row(b: &Batch, r: &RejectRow, topics: &TopicNames, t: Tag, c: &mut Columns) {
    let topic = topics.name(r.source.topic);
    c.row()
        .str(format!("{topic}/{}/{}", r.source.partition, r.source.offset).as_bytes())
        .str(r.reason.as_bytes())
        .str(b.text_bytes(r.detail))
        // Rejects are rare: a copy per row is affordable here.
        .str(&gantry_pii::scrub(b.raw(r.raw), topics.plates.as_deref()))
        .u32(datetime(r.time_ms))
        .str(topic.as_bytes())
        .i32(r.source.partition)
        .i64(r.source.offset)
        .tag(t);
}

pub(crate) const DUPLICATE_COLUMNS: ColumnList = &[
    ("trade_id", "String"),
    ("kind", "String"),
    ("source", "String"),
    ("time", "DateTime"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
];

pub(crate) fn duplicate_row(
    b: &Batch,
    d: &DuplicateRow,
    topics: &TopicNames,
    t: Tag,
    c: &mut Columns,
) {
    c.row()
        .str(b.text_bytes(d.id))
        .str(d.kind.as_bytes())
        .str(
            format!("{}/{}/{}", topics.name(d.source.topic), d.source.partition, d.source.offset)
                .as_bytes(),
        )
        .u32(datetime(d.time_ms))
        .tag(t);
}

pub(crate) const STATUS_COLUMNS: ColumnList = &[
    ("card_id", "String"),
    ("listed", "UInt8"),
    ("reason", "String"),
    ("time", "DateTime"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
];

/// Every table Gantry writes rows to, with the columns of its Native blocks, in the order
/// tables are written.
pub const OUTPUT_TABLES: [(&str, ColumnList); 9] = [
    ("settlements", SETTLEMENT_COLUMNS),
    ("settlement_splits", SPLIT_COLUMNS),
    ("ledger", LEDGER_COLUMNS),
    ("rejects", REJECT_COLUMNS),
    ("duplicates", DUPLICATE_COLUMNS),
    ("status_list", STATUS_COLUMNS),
    ("clearing_daily", CLEARING_COLUMNS),
    ("customer_usage_daily", USAGE_COLUMNS),
    ("card_activity", CARD_COLUMNS),
];

pub(crate) const CLEARING_COLUMNS: ColumnList = &[
    ("trade_date", "Date"),
    ("owner_id", "String"),
    ("issuer_id", "String"),
    ("vehicle_type", "UInt8"),
    ("media_type", "UInt8"),
    ("n", "UInt64"),
    ("pay_fee", "Int64"),
    ("discount_fee", "Int64"),
    ("fee", "Int64"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
    ("trades", "UInt64"),
];

pub(crate) fn clearing_row(b: &Batch, r: &ClearingRow, t: Tag, c: &mut Columns) {
    c.row()
        .u16(date(r.trade_day as i64))
        .str(b.text_bytes(r.owner_id))
        .str(b.text_bytes(r.issuer_id))
        .u8(r.vehicle_type)
        .u8(r.media_type)
        .u64(r.n)
        .i64(r.pay_fee)
        .i64(r.discount_fee)
        .i64(r.fee)
        .tag(t)
        .u64(r.trades);
}

pub(crate) const USAGE_COLUMNS: ColumnList = &[
    ("day", "Date"),
    ("customer_id", "String"),
    ("card_id", "String"),
    ("trips", "UInt64"),
    ("fee", "Int64"),
    ("discount_fee", "Int64"),
    ("topups", "UInt64"),
    ("topup_amount", "Int64"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
];

pub(crate) fn usage_row(b: &Batch, r: &UsageRow, t: Tag, c: &mut Columns) {
    c.row()
        .u16(date(r.day as i64))
        .str(b.text_bytes(r.customer_id))
        .str(b.text_bytes(r.card_id))
        .u64(r.trips)
        .i64(r.fee)
        .i64(r.discount_fee)
        .u64(r.topups)
        .i64(r.topup_amount)
        .tag(t);
}

pub(crate) const CARD_COLUMNS: ColumnList = &[
    ("card_id", "String"),
    ("customer_id", "String"),
    ("entries", "UInt32"),
    ("balance_after", "Int64"),
    ("last_row", "UInt32"),
    ("last_debit_time", "DateTime"),
    ("last_debit_row", "UInt32"),
    ("last_debit", "String"),
    ("last_gantry_id", "String"),
    ("last_units", "String"),
    ("last_fee", "Int64"),
    ("last_plate_enc", "String"),
    ("has_status", "UInt8"),
    ("listed", "UInt8"),
    ("list_reason", "String"),
    ("listed_at", "DateTime"),
    ("gantry_partition", "UInt16"),
    ("batch_seq", "UInt64"),
];

/// A `card_activity` row: the last debit's trip comes from its ledger row's settlement
/// (the plate sealed as in `settlements`), the listing from the status row.
pub(crate) fn card_row(
    b: &Batch,
    r: &CardRow,
    plates: Option<&gantry_pii::Keyring>,
    t: Tag,
    c: &mut Columns,
) {
    let debit = r.last_debit.map(|i| &b.ledger[i as usize]);
    let trip = debit.and_then(|d| d.trip).map(|i| &b.settlements[i as usize]);
    with_trip_plate(b, trip, plates, |enc| card_fields(b, r, (debit, trip), enc, t, c))
}

fn card_fields(
    b: &Batch,
    r: &CardRow,
    (debit, trip): (Option<&LedgerRow>, Option<&Settlement>),
    plate_enc: &[u8],
    t: Tag,
    c: &mut Columns,
) {
    let x = |t| b.text_bytes(t);
    let status = r.last_status.map(|i| &b.status[i as usize]);
    let (gantry, units) =
        trip.map_or((&b""[..], &b""[..]), |s| (x(s.gantry_id), x(s.toll_interval_id)));
    c.row()
        .str(x(r.card_id))
        .str(x(r.customer_id))
        .u32(r.entries)
        .i64(r.balance_after)
        .u32(r.last_row)
        .u32(debit.map_or(0, |d| datetime(d.time_ms)))
        .u32(debit.map_or(0, |d| d.batch_row))
        .str(debit.map_or(&b""[..], |d| x(d.entry_id)))
        .str(gantry)
        .str(units)
        .i64(debit.map_or(0, |d| -d.amount))
        .str(plate_enc)
        .u8(status.is_some() as u8)
        .u8(status.is_some_and(|s| s.listed) as u8)
        .str(status.map_or(&b""[..], |s| s.reason.code().as_bytes()))
        .u32(status.map_or(0, |s| datetime(s.time_ms)))
        .tag(t);
}

pub(crate) fn status_row(b: &Batch, s: &StatusRow, t: Tag, c: &mut Columns) {
    c.row()
        .str(b.text_bytes(s.card_id))
        .u8(s.listed as u8)
        .str(s.reason.code().as_bytes())
        .u32(datetime(s.time_ms))
        .tag(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_carry_leb128_lengths() {
        let mut c = Columns::new(&[("s", "String")], 3);
        c.row().str(b"ab");
        c.row().str(&[b'x'; 300]);
        c.row().str(b"");
        let pieces = c.finish();
        // header: 1 column, 3 rows, name "s", type "String"
        assert_eq!(pieces[0], [&[1, 3, 1, b's', 6][..], b"String"].concat());
        let data = &pieces[1];
        assert_eq!(&data[..3], &[2, b'a', b'b']);
        // 300 = 0b1_0010_1100 → 0xAC 0x02
        assert_eq!(&data[3..5], &[0xAC, 0x02]);
        assert_eq!(data.len(), 3 + 2 + 300 + 1);
        assert_eq!(data[data.len() - 1], 0);
    }

    /// A column longer than a chunk is several pieces that join to exactly its bytes.
    #[test]
    fn long_columns_are_chunked_without_changing_the_bytes() {
        const LIST: ColumnList = &[("s", "String"), ("n", "UInt64")];
        let rows = 3 * COLUMN_CHUNK_BYTES / 20;
        let mut c = Columns::new(LIST, rows);
        let (mut strings, mut numbers) = (Vec::new(), Vec::new());
        for k in 0..rows {
            let s = format!("row-{k:014}");
            c.row().str(s.as_bytes()).u64(k as u64);
            strings.push(s.len() as u8);
            strings.extend_from_slice(s.as_bytes());
            numbers.extend_from_slice(&(k as u64).to_le_bytes());
        }
        let pieces = c.finish();
        assert!(pieces.len() > 6, "several chunks per column");
        let body = pieces.concat();
        let mut want = vec![2];
        leb128(&mut want, rows);
        want.extend_from_slice(&[1, b's', 6]);
        want.extend_from_slice(b"String");
        want.extend_from_slice(&strings);
        want.extend_from_slice(&[1, b'n', 6]);
        want.extend_from_slice(b"UInt64");
        want.extend_from_slice(&numbers);
        assert!(body == want);
    }

    #[test]
    fn numbers_are_little_endian_and_nullable_is_a_null_map_then_values() {
        const LIST: ColumnList = &[
            ("p", "Int32"),
            ("n", NULLABLE_I64),
            ("gantry_partition", "UInt16"),
            ("batch_seq", "UInt64"),
        ];
        let mut c = Columns::new(LIST, 2);
        c.row().i32(-2).nullable_i64(None).tag(Tag { gantry_partition: 3, batch_seq: 7 });
        c.row().i32(1).nullable_i64(Some(5)).tag(Tag { gantry_partition: 3, batch_seq: 8 });
        let pieces = c.finish();
        // header+p, p's values, n's header, null map, values, partition header, values, seq header, values
        assert_eq!(pieces.len(), 9);
        assert_eq!(pieces[1], [(-2i32).to_le_bytes(), 1i32.to_le_bytes()].concat());
        assert_eq!(pieces[2], [&[1, b'n', 15][..], b"Nullable(Int64)"].concat());
        assert_eq!(pieces[3], [1, 0]);
        assert_eq!(pieces[4], [0i64.to_le_bytes(), 5i64.to_le_bytes()].concat());
        assert_eq!(pieces[6], [3, 0, 3, 0]);
        assert_eq!(pieces[8], [7u64.to_le_bytes(), 8u64.to_le_bytes()].concat());
    }

    /// Every table's column list names each of its columns once, with the type its statement in `schema/`
    /// declares (a Native block names its types, and ClickHouse refuses a mismatch).
    #[test]
    fn column_lists_match_the_schema_names_and_types() {
        for (table, cols) in OUTPUT_TABLES {
            let sql = crate::schema::statement(table).expect("table in schema").sql;
            let body = &sql[..sql.find(") ENGINE").expect("engine")];
            let mut declared: Vec<(String, String)> = body
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let l = l.trim().trim_end_matches(',');
                    let (name, ty) = l.split_once(' ')?;
                    Some((name.to_string(), ty.trim().to_string()))
                })
                .collect();
            let mut listed: Vec<(String, String)> =
                cols.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
            declared.sort();
            listed.sort();
            assert_eq!(listed, declared, "{table}");
        }
    }
}
