//! RowBinary encodings of the core's output rows, written by hand.
//!
//! Each table has a column list (the order its rows' bytes are written in; it is named in the
//! INSERT, so the table's own column order does not matter) and an encoder that appends one
//! row to a buffer, copying text straight from the batch's arena. serde's RowBinary
//! serializer (a call and a capacity check per field, through the `clickhouse` crate's
//! `Insert::write`) was a third of Gantry's CPU during a drain (perf of the e2e benchmark).
//!
//! RowBinary: `String` is a LEB128 length and the bytes; integers are little-endian;
//! `Nullable(T)` is a byte (1 = NULL) followed by `T` when not null; `DateTime` is u32
//! seconds and `Date` u16 days since 1970-01-01.

use gantry_core::output::{Batch, DuplicateRow, LedgerRow, RejectRow, Settlement, SplitRow, StatusRow};

use crate::TopicNames;

/// The batch that wrote a row.
#[derive(Clone, Copy)]
pub(crate) struct Tag {
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

/// `DateTime`: seconds since 1970 as u32, clamped to its range.
fn datetime(ms: i64) -> u32 {
    (ms.div_euclid(1000)).clamp(0, u32::MAX as i64) as u32
}

/// `Date`: days since 1970 as u16, clamped to its range.
fn date(day: i64) -> u16 {
    day.clamp(0, u16::MAX as i64) as u16
}

/// One appender per fixed-width integer type: its little-endian bytes.
macro_rules! little_endian {
    ($($t:ident),*) => {$(
        #[inline]
        fn $t(&mut self, v: $t) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
    )*};
}

/// Appends RowBinary values to a buffer.
pub(crate) struct RowBinary<'b>(pub &'b mut Vec<u8>);

impl RowBinary<'_> {
    #[inline]
    fn str(&mut self, s: &[u8]) -> &mut Self {
        let mut n = s.len();
        while n >= 0x80 {
            self.0.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
        self.0.extend_from_slice(s);
        self
    }
    #[inline]
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    little_endian! {u16, u32, i32, i64, u64}
    #[inline]
    fn nullable_i64(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.u8(0).i64(v),
            None => self.u8(1),
        }
    }
    #[inline]
    fn tag(&mut self, t: Tag) -> &mut Self {
        self.u16(t.gantry_partition).u64(t.batch_seq)
    }
}

pub(crate) const SETTLEMENT_COLUMNS: &str = "trade_id, trans_time, trade_date, gantry_id, toll_interval_id, card_id, obu_id, \
vehicle_plate, pass_id, customer_id, issuer_id, media_type, card_type, vehicle_type, vehicle_class, axle_count, pay_fee, \
discount_fee, fee, lane_fee, tariff_version, balance_after, flags, source_partition, source_offset, gantry_partition, batch_seq";

pub(crate) fn settlement_row(b: &Batch, s: &Settlement, t: Tag, out: &mut Vec<u8>) {
    let x = |t| b.text_bytes(t);
    RowBinary(out)
        .str(x(s.trade_id))
        .u32(datetime(s.trans_time_ms))
        .u16(date(s.trade_day as i64))
        .str(x(s.gantry_id))
        .str(x(s.toll_interval_id))
        .str(x(s.card_id))
        .str(x(s.obu_id))
        .str(x(s.vehicle_plate))
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

pub(crate) const SPLIT_COLUMNS: &str =
    "trade_id, trade_date, trans_time, interval_id, owner_id, issuer_id, vehicle_type, media_type, pay_fee, discount_fee, fee, gantry_partition, batch_seq";

pub(crate) fn split_row(b: &Batch, s: &SplitRow, t: Tag, out: &mut Vec<u8>) {
    let x = |t| b.text_bytes(t);
    RowBinary(out)
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

pub(crate) const LEDGER_COLUMNS: &str =
    "card_id, customer_id, entry_id, kind, amount, balance_after, time, entry_date, source_partition, source_offset, gantry_partition, batch_seq";

pub(crate) fn ledger_row(b: &Batch, l: &LedgerRow, t: Tag, out: &mut Vec<u8>) {
    let x = |t| b.text_bytes(t);
    RowBinary(out)
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
        .tag(t);
}

pub(crate) const REJECT_COLUMNS: &str = "source, reason, detail, raw, time, topic, source_partition, source_offset, gantry_partition, batch_seq";

pub(crate) fn reject_row(b: &Batch, r: &RejectRow, topics: &TopicNames, t: Tag, out: &mut Vec<u8>) {
    let topic = topics.name(r.source.topic);
    RowBinary(out)
        .str(format!("{topic}/{}/{}", r.source.partition, r.source.offset).as_bytes())
        .str(r.reason.as_bytes())
        .str(b.text_bytes(r.detail))
        .str(b.raw(r.raw))
        .u32(datetime(r.time_ms))
        .str(topic.as_bytes())
        .i32(r.source.partition)
        .i64(r.source.offset)
        .tag(t);
}

pub(crate) const DUPLICATE_COLUMNS: &str = "trade_id, kind, source, time, gantry_partition, batch_seq";

pub(crate) fn duplicate_row(b: &Batch, d: &DuplicateRow, topics: &TopicNames, t: Tag, out: &mut Vec<u8>) {
    RowBinary(out)
        .str(b.text_bytes(d.id))
        .str(d.kind.as_bytes())
        .str(format!("{}/{}/{}", topics.name(d.source.topic), d.source.partition, d.source.offset).as_bytes())
        .u32(datetime(d.time_ms))
        .tag(t);
}

pub(crate) const STATUS_COLUMNS: &str = "card_id, listed, reason, time, gantry_partition, batch_seq";

pub(crate) fn status_row(b: &Batch, s: &StatusRow, t: Tag, out: &mut Vec<u8>) {
    RowBinary(out)
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
        let mut out = Vec::new();
        RowBinary(&mut out).str(b"ab").str(&[b'x'; 300]).str(b"");
        assert_eq!(&out[..3], &[2, b'a', b'b']);
        // 300 = 0b1_0010_1100 → 0xAC 0x02
        assert_eq!(&out[3..5], &[0xAC, 0x02]);
        assert_eq!(out.len(), 3 + 2 + 300 + 1);
        assert_eq!(out[out.len() - 1], 0);
    }

    #[test]
    fn numbers_are_little_endian_and_nullable_has_a_flag() {
        let mut out = Vec::new();
        RowBinary(&mut out).u16(0x0102).i32(-2).nullable_i64(None).nullable_i64(Some(5)).tag(Tag { gantry_partition: 3, batch_seq: 7 });
        assert_eq!(out, [vec![2, 1], (-2i32).to_le_bytes().to_vec(), vec![1, 0], 5i64.to_le_bytes().to_vec(), vec![3, 0], 7u64.to_le_bytes().to_vec()].concat());
    }

    #[test]
    fn column_lists_name_every_column_of_their_table_once() {
        let schema = crate::schema::SCHEMA_SQL;
        for (table, cols) in [
            ("settlements", SETTLEMENT_COLUMNS),
            ("settlement_splits", SPLIT_COLUMNS),
            ("ledger", LEDGER_COLUMNS),
            ("rejects", REJECT_COLUMNS),
            ("duplicates", DUPLICATE_COLUMNS),
            ("status_list", STATUS_COLUMNS),
        ] {
            let start = schema.find(&format!("CREATE TABLE IF NOT EXISTS {table} (")).expect("table in schema");
            let body = &schema[start..start + schema[start..].find(") ENGINE").expect("engine")];
            let declared: Vec<&str> = body.lines().skip(1).map(|l| l.trim().split_whitespace().next().unwrap_or("")).filter(|c| !c.is_empty()).collect();
            let mut listed: Vec<&str> = cols.split(',').map(str::trim).collect();
            let mut declared_sorted = declared.clone();
            listed.sort();
            declared_sorted.sort();
            assert_eq!(listed, declared_sorted, "{table}");
        }
    }
}
