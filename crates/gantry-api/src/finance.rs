//! Finance endpoints (role `finance`): daily settlement per road owner, the issuer × owner
//! clearing matrix, reconciliation per partition, arrears (追缴).
//!
//! A `date` is a transaction date (`trade_date`, the network's zone): a late record joins
//! the day it happened, so a day's figures can still grow after the day; the T+1 file is
//! what was settled when it was made (its `generated_at` says when).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use crate::auth::Finance;
use crate::cache::{BatchKey, Rows};
use crate::db::{self, sql, Db};
use crate::error::ApiError;
use crate::params::{day_seconds, parse_date, time_text, Q};
use crate::render::{reply, write_rows, Format, Tabular};
use crate::AppState;
use gantry_clickhouse::BatchRecord;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DateQuery {
    /// Day, `YYYY-MM-DD` in the network's time zone.
    pub date: String,
}

/// One road owner's day.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct OwnerSettlement {
    pub owner_id: String,
    /// Transactions that crossed at least one of the owner's tolling units.
    pub transactions: u64,
    /// (transaction, unit) pairs: a transaction crossing two of the owner's units counts 2.
    pub unit_passages: u64,
    /// Before discounts, fen.
    pub pay_fee: i64,
    pub discount_fee: i64,
    /// What the owner is owed, fen.
    pub fee: i64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettlementsDaily {
    pub date: String,
    pub owners: Vec<OwnerSettlement>,
    /// Sums over the owners (`transactions`: each transaction once).
    pub total: OwnerSettlement,
}

impl Tabular for SettlementsDaily {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        write_rows(
            w,
            &self.owners,
            &["owner_id", "transactions", "unit_passages", "pay_fee", "discount_fee", "fee"],
        )
    }
}

/// The day's settlement: what the endpoint answers and what `gantry report settlement` writes.
pub async fn settlements_daily_of(db: &Db, date: &str) -> Result<SettlementsDaily, ApiError> {
    parse_date("date", date)?;
    let rows: Vec<db::OwnerDay> = db.query(sql::SETTLEMENTS_DAILY).bind(date).fetch_all().await?;
    let owners: Vec<OwnerSettlement> = rows
        .into_iter()
        .map(|r| OwnerSettlement {
            owner_id: r.owner_id,
            transactions: r.transactions,
            unit_passages: r.unit_passages,
            pay_fee: r.pay_fee,
            discount_fee: r.discount_fee,
            fee: r.fee,
        })
        .collect();
    // A transaction crossing units of two owners is one transaction of the day, not two:
    // its count comes from the transactions, not the owners' sum.
    let transactions: Vec<u64> =
        db.query(sql::SETTLEMENTS_DAILY_TOTAL).bind(date).fetch_all().await?;
    let total = OwnerSettlement {
        owner_id: "TOTAL".into(),
        transactions: transactions.first().copied().unwrap_or(0),
        unit_passages: owners.iter().map(|o| o.unit_passages).sum(),
        pay_fee: owners.iter().map(|o| o.pay_fee).sum(),
        discount_fee: owners.iter().map(|o| o.discount_fee).sum(),
        fee: owners.iter().map(|o| o.fee).sum(),
    };
    Ok(SettlementsDaily { date: date.to_string(), owners, total })
}

/// The T+1 settlement file (`gantry report settlement`): the endpoint's CSV, then a
/// `TOTAL` line with the endpoint's `total`, so the file's totals are the endpoint's.
pub fn settlement_file(day: &SettlementsDaily) -> Result<Vec<u8>, ApiError> {
    struct WithTotal<'a>(&'a SettlementsDaily);
    impl Serialize for WithTotal<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize(s)
        }
    }
    impl Tabular for WithTotal<'_> {
        fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
            let rows: Vec<&OwnerSettlement> = self.0.owners.iter().chain([&self.0.total]).collect();
            write_rows(w, &rows, &[])
        }
    }
    crate::render::csv_bytes(&WithTotal(day))
}

/// Daily settlement per road owner.
#[utoipa::path(get, path = "/v1/settlements/daily", tag = "finance", params(DateQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SettlementsDaily, description = "JSON, or CSV (the owners) to Accept: text/csv"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub async fn settlements_daily(
    State(s): State<AppState>,
    _: Finance,
    headers: HeaderMap,
    Q(q): Q<DateQuery>,
) -> Result<Response, ApiError> {
    let body = settlements_daily_of(&s.db, &q.date).await?;
    reply(Format::of(&headers), &body)
}

/// One cell of the clearing matrix: what `issuer_id`'s cardholders owe `owner_id`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClearingCell {
    pub issuer_id: String,
    pub owner_id: String,
    pub unit_passages: u64,
    pub pay_fee: i64,
    pub discount_fee: i64,
    /// Owed by the issuer to the owner, fen.
    pub fee: i64,
}

/// A per-party total of the matrix.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartyTotal {
    pub id: String,
    pub unit_passages: u64,
    pub fee: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Clearing {
    pub date: String,
    /// ETC transactions (media type 1): issuer × owner.
    pub matrix: Vec<ClearingCell>,
    /// What each issuer pays in all.
    pub issuers: Vec<PartyTotal>,
    /// What each owner receives from issuers in all.
    pub owners: Vec<PartyTotal>,
    /// CPC (media type 2) fees per owner: collected at the exit, owed by no issuer.
    pub cpc: Vec<PartyTotal>,
}

impl Tabular for Clearing {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        write_rows(
            w,
            &self.matrix,
            &["issuer_id", "owner_id", "unit_passages", "pay_fee", "discount_fee", "fee"],
        )
    }
}

/// Issuer × owner clearing: what each card issuer owes each road owner.
#[utoipa::path(get, path = "/v1/clearing", tag = "finance", params(DateQuery), security(("bearer" = [])),
    responses((status = 200, body = Clearing, description = "JSON, or CSV (the matrix) to Accept: text/csv"),
        (status = 400, body = crate::error::ErrorBody)))]
pub async fn clearing(
    State(s): State<AppState>,
    _: Finance,
    headers: HeaderMap,
    Q(q): Q<DateQuery>,
) -> Result<Response, ApiError> {
    parse_date("date", &q.date)?;
    let cells: Vec<db::ClearingCell> = s.db.query(sql::CLEARING).bind(&q.date).fetch_all().await?;
    let mut body = Clearing {
        date: q.date.clone(),
        matrix: vec![],
        issuers: vec![],
        owners: vec![],
        cpc: vec![],
    };
    for c in cells {
        if c.media_type != 1 {
            add_to(&mut body.cpc, &c.owner_id, c.unit_passages, c.fee);
            continue;
        }
        add_to(&mut body.issuers, &c.issuer_id, c.unit_passages, c.fee);
        add_to(&mut body.owners, &c.owner_id, c.unit_passages, c.fee);
        body.matrix.push(ClearingCell {
            issuer_id: c.issuer_id,
            owner_id: c.owner_id,
            unit_passages: c.unit_passages,
            pay_fee: c.pay_fee,
            discount_fee: c.discount_fee,
            fee: c.fee,
        });
    }
    for list in [&mut body.issuers, &mut body.owners, &mut body.cpc] {
        list.sort_by(|a, b| a.id.cmp(&b.id));
    }
    reply(Format::of(&headers), &body)
}

fn add_to(list: &mut Vec<PartyTotal>, id: &str, n: u64, fee: i64) {
    match list.iter_mut().find(|t| t.id == id) {
        Some(t) => {
            t.unit_passages += n;
            t.fee += fee;
        }
        None => list.push(PartyTotal { id: id.to_string(), unit_passages: n, fee }),
    }
}

/// One partition's reconciliation for the batches committed that day (their journal rows,
/// `gantry_batches`, read as the pipeline writes them).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionReconciliation {
    pub partition: u16,
    pub batches: u64,
    /// Messages consumed from both topics.
    pub messages: u64,
    /// Lane records in them (a message may hold several).
    pub lane_records: u64,
    pub settled: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub account_events: u64,
    pub events_applied: u64,
    pub events_rejected: u64,
    pub events_duplicates: u64,
    /// Rows in `settlements`, `rejects`, `duplicates` written by these batches.
    pub settlement_rows: u64,
    pub reject_rows: u64,
    pub duplicate_rows: u64,
    /// Offsets between consecutive batches not covered by either (a batch missing).
    pub offset_gaps: u64,
    /// lane_records − (settled + rejected + duplicates) + account_events − (applied +
    /// rejected + duplicates) + every table's rows against the journal: 0 when all adds up.
    pub difference: i64,
    /// `difference != 0` or `offset_gaps > 0`: an alarm.
    pub alarm: bool,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reconciliation {
    pub date: String,
    pub partitions: Vec<PartitionReconciliation>,
    /// Any partition in alarm.
    pub alarm: bool,
}

impl Tabular for Reconciliation {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        write_rows(
            w,
            &self.partitions,
            &["partition", "batches", "messages", "difference", "alarm"],
        )
    }
}

/// Messages consumed against settled + rejected + duplicates, per partition, for the
/// batches committed on `date`; each count also against the rows in its table.
#[utoipa::path(get, path = "/v1/reconciliation", tag = "finance", params(DateQuery), security(("bearer" = [])),
    responses((status = 200, body = Reconciliation, description = "JSON, or CSV (the partitions)"),
        (status = 400, body = crate::error::ErrorBody)))]
pub async fn reconciliation(
    State(s): State<AppState>,
    _: Finance,
    headers: HeaderMap,
    Q(q): Q<DateQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = day_seconds(parse_date("date", &q.date)?, s.cfg.network_utc_offset_min);
    let batches: Vec<BatchRecord> =
        s.db.query(sql::RECONCILIATION_JOURNAL).bind(from).bind(to).fetch_all().await?;
    let keys: Vec<BatchKey> = batches.iter().map(|b| (b.gantry_partition, b.batch_seq)).collect();
    let rows = s.batch_counts.get(&keys, |missing| count_rows(&s.db, (from, to), missing)).await?;
    let mut counts: Vec<db::TableCount> = Vec::new();
    for (&(p, _), r) in keys.iter().zip(&rows) {
        for (t, n) in TABLES.iter().zip(r) {
            match counts.iter_mut().find(|c| c.gantry_partition == p && c.table == *t) {
                Some(c) => c.n += n,
                None => {
                    counts.push(db::TableCount { gantry_partition: p, table: t.to_string(), n: *n })
                }
            }
        }
    }
    let partitions = reconcile(&batches, &counts);
    let alarm = partitions.iter().any(|p| p.alarm);
    reply(Format::of(&headers), &Reconciliation { date: q.date, partitions, alarm })
}

/// The tables reconciliation counts rows of, in [`Rows`] order.
const TABLES: [&str; 3] = ["settlements", "rejects", "duplicates"];

/// The rows the `missing` batches (committed between `from` and `to`) wrote to each table.
/// One scan of each table's batch tag for all of them (it is not the tables' key): the
/// query takes the day's batches from the lowest missing sequence number on, so the first
/// request of a day counts all, a later one what landed since.
async fn count_rows(
    db: &db::Db,
    (from, to): (u32, u32),
    missing: Vec<BatchKey>,
) -> Result<HashMap<BatchKey, Rows>, ApiError> {
    let lowest = missing.iter().map(|(_, seq)| *seq).min().unwrap_or(0);
    let mut q = db.query(sql::RECONCILIATION_TABLES);
    for _ in TABLES {
        q = q.bind(from).bind(to).bind(lowest);
    }
    let found: Vec<db::BatchTableCount> = q.fetch_all().await?;
    let mut out: HashMap<BatchKey, Rows> = HashMap::new();
    for c in found {
        let i = TABLES.iter().position(|t| *t == c.table).expect("a table of the query");
        out.entry((c.gantry_partition, c.batch_seq)).or_default()[i] = c.n;
    }
    Ok(out)
}

/// Sums the journal per partition and sets it against the tables (pure: unit-tested).
pub fn reconcile(
    batches: &[BatchRecord],
    counts: &[db::TableCount],
) -> Vec<PartitionReconciliation> {
    let mut out: Vec<PartitionReconciliation> = Vec::new();
    let mut prev: Option<&BatchRecord> = None;
    for b in batches {
        if out.last().is_none_or(|p| p.partition != b.gantry_partition) {
            out.push(PartitionReconciliation {
                partition: b.gantry_partition,
                ..Default::default()
            });
            prev = None;
        }
        let p = out.last_mut().expect("pushed above");
        if let Some(a) = prev {
            let contiguous = a.batch_seq + 1 == b.batch_seq
                && a.lane_to == b.lane_from
                && a.acct_to == b.acct_from;
            p.offset_gaps += u64::from(!contiguous);
        }
        prev = Some(b);
        p.batches += 1;
        p.messages += b.messages;
        p.lane_records += b.lane_records;
        p.settled += b.settled;
        p.rejected += b.lane_rejected;
        p.duplicates += b.lane_duplicates;
        p.account_events += b.account_events;
        p.events_applied += b.events_applied;
        p.events_rejected += b.events_rejected;
        p.events_duplicates += b.events_duplicates;
    }
    for c in counts {
        let Some(p) = out.iter_mut().find(|p| p.partition == c.gantry_partition) else { continue };
        match c.table.as_str() {
            "settlements" => p.settlement_rows = c.n,
            "rejects" => p.reject_rows = c.n,
            _ => p.duplicate_rows = c.n,
        }
    }
    for p in &mut out {
        let d = |a: u64, b: u64| (a as i64 - b as i64).abs();
        p.difference = d(p.lane_records, p.settled + p.rejected + p.duplicates)
            + d(p.account_events, p.events_applied + p.events_rejected + p.events_duplicates)
            + d(p.settlement_rows, p.settled)
            + d(p.reject_rows, p.rejected + p.events_rejected)
            + d(p.duplicate_rows, p.duplicates + p.events_duplicates);
        p.alarm = p.difference != 0 || p.offset_gaps > 0;
    }
    out
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArrearsQuery {
    /// Transaction day, `YYYY-MM-DD`.
    pub date: String,
}

/// An unknown-card transaction, priced.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArrearsTrade {
    pub card_id: String,
    pub trade_id: String,
    pub time: String,
    pub gantry_id: String,
    pub pay_fee: i64,
    pub discount_fee: i64,
    /// What the card owes, fen.
    pub fee: i64,
    pub tariff_version: String,
    /// The card has been opened since: the arrears can be collected from its account.
    pub card_known: bool,
}

/// A card's arrears of the day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArrearsCard {
    pub card_id: String,
    pub trades: u64,
    pub fee: i64,
    pub card_known: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Arrears {
    pub date: String,
    pub cards: Vec<ArrearsCard>,
    pub trades: Vec<ArrearsTrade>,
    pub total_fee: i64,
}

impl Tabular for Arrears {
    fn write_csv(&self, w: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        write_rows(
            w,
            &self.trades,
            &[
                "card_id",
                "trade_id",
                "time",
                "gantry_id",
                "pay_fee",
                "discount_fee",
                "fee",
                "tariff_version",
                "card_known",
            ],
        )
    }
}

/// Unknown-card transactions (追缴) with their price, per card, and whether the card is
/// known now.
#[utoipa::path(get, path = "/v1/arrears", tag = "finance", params(ArrearsQuery), security(("bearer" = [])),
    responses((status = 200, body = Arrears, description = "JSON, or CSV (the trades)"), (status = 400, body = crate::error::ErrorBody)))]
pub async fn arrears(
    State(s): State<AppState>,
    _: Finance,
    headers: HeaderMap,
    Q(q): Q<ArrearsQuery>,
) -> Result<Response, ApiError> {
    let offset = s.cfg.network_utc_offset_min;
    let (from, to) = day_seconds(parse_date("date", &q.date)?, offset);
    let rows: Vec<db::ArrearsRow> =
        s.db.query(sql::ARREARS).bind(from).bind(to).fetch_all().await?;
    let known: Vec<String> = s.db.query(sql::ARREARS_KNOWN).bind(from).bind(to).fetch_all().await?;
    let mut body = Arrears { date: q.date, cards: vec![], trades: vec![], total_fee: 0 };
    for r in rows {
        let card_known = known.contains(&r.card_id);
        match body.cards.last_mut() {
            Some(c) if c.card_id == r.card_id => {
                c.trades += 1;
                c.fee += r.fee;
            }
            _ => body.cards.push(ArrearsCard {
                card_id: r.card_id.clone(),
                trades: 1,
                fee: r.fee,
                card_known,
            }),
        }
        body.total_fee += r.fee;
        body.trades.push(ArrearsTrade {
            card_id: r.card_id,
            trade_id: r.trade_id,
            time: time_text(r.time, offset),
            gantry_id: r.gantry_id,
            pay_fee: r.pay_fee,
            discount_fee: r.discount_fee,
            fee: r.fee,
            tariff_version: r.tariff_version,
            card_known,
        });
    }
    // Card numbers of unknown cards: not tied to a customer, so not personal data here (no
    // audit subject).
    reply(Format::of(&headers), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(p: u16, seq: u64, lane: (i64, i64), acct: (i64, i64), c: [u64; 4]) -> BatchRecord {
        BatchRecord {
            phase: gantry_clickhouse::PHASE_COMMITTED.into(),
            written_at: 0,
            instance: "i".into(),
            clock_ms: 0,
            tariff_set: 0,
            journal_format: gantry_clickhouse::JOURNAL_FORMAT,
            late_known: vec![],
            gantry_partition: p,
            batch_seq: seq,
            lane_from: lane.0,
            lane_to: lane.1,
            acct_from: acct.0,
            acct_to: acct.1,
            messages: (lane.1 - lane.0 + acct.1 - acct.0) as u64,
            lane_records: c[0],
            settled: c[1],
            lane_rejected: c[2],
            lane_duplicates: c[3],
            account_events: 0,
            events_applied: 0,
            events_rejected: 0,
            events_duplicates: 0,
        }
    }
    fn count(p: u16, t: &str, n: u64) -> db::TableCount {
        db::TableCount { gantry_partition: p, table: t.into(), n }
    }

    #[test]
    fn reconciliation_adds_up_and_alarms_on_any_difference() {
        let b = [
            batch(0, 1, (0, 10), (0, 2), [10, 8, 1, 1]),
            batch(0, 2, (10, 15), (2, 2), [5, 5, 0, 0]),
        ];
        let good = [count(0, "settlements", 13), count(0, "rejects", 1), count(0, "duplicates", 1)];
        let r = reconcile(&b, &good);
        assert_eq!(
            (r.len(), r[0].batches, r[0].messages, r[0].difference, r[0].alarm),
            (1, 2, 17, 0, false)
        );
        // A settlement row missing, a gap between batches, a batch skipped.
        let short =
            [count(0, "settlements", 12), count(0, "rejects", 1), count(0, "duplicates", 1)];
        assert_eq!(reconcile(&b, &short)[0].difference, 1);
        let gap = [
            batch(0, 1, (0, 10), (0, 2), [10, 8, 1, 1]),
            batch(0, 2, (11, 15), (2, 2), [4, 4, 0, 0]),
        ];
        assert!(
            reconcile(
                &gap,
                &[count(0, "settlements", 12), count(0, "rejects", 1), count(0, "duplicates", 1)]
            )[0]
            .alarm
        );
        let skipped = [
            batch(0, 1, (0, 10), (0, 2), [10, 8, 1, 1]),
            batch(0, 3, (10, 15), (2, 2), [5, 5, 0, 0]),
        ];
        assert_eq!(reconcile(&skipped, &good)[0].offset_gaps, 1);
        // Records that are neither settled, rejected nor duplicates.
        let lost = [batch(1, 1, (0, 10), (0, 0), [10, 9, 0, 0])];
        assert!(reconcile(&lost, &[count(1, "settlements", 9)])[0].alarm);
    }
}
