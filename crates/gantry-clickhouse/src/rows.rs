//! RowBinary encodings of the core's output rows. They borrow their text from the batch's
//! arena, so encoding a batch copies each string once, into the INSERT body.

use clickhouse::Row;
use gantry_core::output::{Batch, DuplicateRow, LedgerRow, RejectRow, Settlement, SplitRow, StatusRow};
use serde::Serialize;

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

#[derive(Row, Serialize)]
pub struct SettlementRowCh<'a> {
    pub trade_id: &'a str,
    pub trans_time: u32,
    pub trade_date: u16,
    pub gantry_id: &'a str,
    pub toll_interval_id: &'a str,
    pub card_id: &'a str,
    pub obu_id: &'a str,
    pub vehicle_plate: &'a str,
    pub pass_id: &'a str,
    pub customer_id: &'a str,
    pub issuer_id: &'a str,
    pub media_type: u8,
    pub card_type: u8,
    pub vehicle_type: u8,
    pub vehicle_class: u8,
    pub axle_count: u8,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
    pub lane_fee: Option<i64>,
    pub tariff_version: &'a str,
    pub balance_after: i64,
    pub flags: u32,
    pub source_partition: i32,
    pub source_offset: i64,
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

pub(crate) fn settlement_row<'a>(b: &'a Batch, s: &Settlement, t: Tag) -> SettlementRowCh<'a> {
    SettlementRowCh {
        trade_id: b.text(s.trade_id),
        trans_time: datetime(s.trans_time_ms),
        trade_date: date(s.trade_day as i64),
        gantry_id: b.text(s.gantry_id),
        toll_interval_id: b.text(s.toll_interval_id),
        card_id: b.text(s.card_id),
        obu_id: b.text(s.obu_id),
        vehicle_plate: b.text(s.vehicle_plate),
        pass_id: b.text(s.pass_id),
        customer_id: b.text(s.customer_id),
        issuer_id: b.text(s.issuer_id),
        media_type: s.media_type,
        card_type: s.card_type,
        vehicle_type: s.vehicle_type,
        vehicle_class: s.vehicle_class,
        axle_count: s.axle_count,
        pay_fee: s.pay_fee,
        discount_fee: s.discount_fee,
        fee: s.fee,
        lane_fee: s.lane_fee,
        tariff_version: b.text(s.tariff_version),
        balance_after: s.balance_after,
        flags: s.flags,
        source_partition: s.source.partition,
        source_offset: s.source.offset,
        gantry_partition: t.gantry_partition,
        batch_seq: t.batch_seq,
    }
}

#[derive(Row, Serialize)]
pub struct SplitRowCh<'a> {
    pub trade_id: &'a str,
    pub trade_date: u16,
    pub trans_time: u32,
    pub interval_id: &'a str,
    pub owner_id: &'a str,
    pub issuer_id: &'a str,
    pub vehicle_type: u8,
    pub media_type: u8,
    pub pay_fee: i64,
    pub discount_fee: i64,
    pub fee: i64,
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

pub(crate) fn split_row<'a>(b: &'a Batch, s: &SplitRow, t: Tag) -> SplitRowCh<'a> {
    SplitRowCh {
        trade_id: b.text(s.trade_id),
        trade_date: date(s.trade_day as i64),
        trans_time: datetime(s.trans_time_ms),
        interval_id: b.text(s.interval_id),
        owner_id: b.text(s.owner_id),
        issuer_id: b.text(s.issuer_id),
        vehicle_type: s.vehicle_type,
        media_type: s.media_type,
        pay_fee: s.pay_fee,
        discount_fee: s.discount_fee,
        fee: s.fee,
        gantry_partition: t.gantry_partition,
        batch_seq: t.batch_seq,
    }
}

#[derive(Row, Serialize)]
pub struct LedgerRowCh<'a> {
    pub card_id: &'a str,
    pub customer_id: &'a str,
    pub entry_id: &'a str,
    pub kind: &'a str,
    pub amount: i64,
    pub balance_after: i64,
    pub time: u32,
    pub entry_date: u16,
    pub source_partition: i32,
    pub source_offset: i64,
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

pub(crate) fn ledger_row<'a>(b: &'a Batch, l: &LedgerRow, t: Tag) -> LedgerRowCh<'a> {
    LedgerRowCh {
        card_id: b.text(l.card_id),
        customer_id: b.text(l.customer_id),
        entry_id: b.text(l.entry_id),
        kind: l.kind.name(),
        amount: l.amount,
        balance_after: l.balance_after,
        time: datetime(l.time_ms),
        entry_date: date(l.entry_day as i64),
        source_partition: l.source.partition,
        source_offset: l.source.offset,
        gantry_partition: t.gantry_partition,
        batch_seq: t.batch_seq,
    }
}

#[derive(Row, Serialize)]
pub struct RejectRowCh<'a> {
    pub source: String,
    pub reason: &'a str,
    pub detail: &'a str,
    #[serde(with = "serde_bytes_str")]
    pub raw: &'a [u8],
    pub time: u32,
    pub topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

/// A `String` column holding arbitrary bytes (raw rejects may not be UTF-8).
mod serde_bytes_str {
    pub fn serialize<S: serde::Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
}

pub(crate) fn reject_row<'a>(b: &'a Batch, r: &RejectRow, topics: &'a TopicNames, t: Tag) -> RejectRowCh<'a> {
    let topic = topics.name(r.source.topic);
    RejectRowCh {
        source: format!("{topic}/{}/{}", r.source.partition, r.source.offset),
        reason: r.reason,
        detail: b.text(r.detail),
        raw: b.raw(r.raw),
        time: datetime(r.time_ms),
        topic,
        source_partition: r.source.partition,
        source_offset: r.source.offset,
        gantry_partition: t.gantry_partition,
        batch_seq: t.batch_seq,
    }
}

#[derive(Row, Serialize)]
pub struct DuplicateRowCh<'a> {
    pub trade_id: &'a str,
    pub kind: &'a str,
    pub source: String,
    pub time: u32,
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

pub(crate) fn duplicate_row<'a>(b: &'a Batch, d: &DuplicateRow, topics: &TopicNames, t: Tag) -> DuplicateRowCh<'a> {
    DuplicateRowCh {
        trade_id: b.text(d.id),
        kind: d.kind,
        source: format!("{}/{}/{}", topics.name(d.source.topic), d.source.partition, d.source.offset),
        time: datetime(d.time_ms),
        gantry_partition: t.gantry_partition,
        batch_seq: t.batch_seq,
    }
}

#[derive(Row, Serialize)]
pub struct StatusRowCh<'a> {
    pub card_id: &'a str,
    pub listed: u8,
    pub reason: &'a str,
    pub time: u32,
    pub gantry_partition: u16,
    pub batch_seq: u64,
}

pub(crate) fn status_row<'a>(b: &'a Batch, s: &StatusRow, t: Tag) -> StatusRowCh<'a> {
    StatusRowCh {
        card_id: b.text(s.card_id),
        listed: s.listed as u8,
        reason: s.reason.code(),
        time: datetime(s.time_ms),
        gantry_partition: t.gantry_partition,
        batch_seq: t.batch_seq,
    }
}
