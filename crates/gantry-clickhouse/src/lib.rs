//! Gantry's ClickHouse side: the schema (contract §4), RowBinary encodings of the core's
//! output rows, and the batch journal that makes writes exactly once.
//!
//! Contract with the pipeline (see ARCHITECTURE.md): for batch *k* of partition *p*, call
//! [`Store::plan_batch`], then [`Store::write_batch`], then [`Store::commit_batch`]. Each
//! table gets one INSERT per batch, every row tagged `(gantry_partition, batch_seq)`; with
//! `only_missing` set (recovery), a table that already holds rows of the batch is skipped.
//!
//! ClickHouse 18.16 notes: queries run uncompressed (18.16 answers compressed SELECTs with an
//! empty body), inserts use LZ4; RowBinary without schema validation (18.16 lacks
//! `RowBinaryWithNamesAndTypes`); `DateTime` is seconds (u32), `Date` is days (u16).

mod order;
mod rows;
pub mod schema;

use clickhouse::{Client, Compression, Row};
use gantry_core::output::{Batch, Counts, DuplicateRow, LedgerRow, RejectRow, Settlement, SplitRow, StatusRow, Topic};
use serde::{Deserialize, Serialize};

use order::{insert_order, KeyBytes};
use rows::*;

/// Size of each piece of an INSERT body handed to the HTTP client: large enough that the
/// per-send cost vanishes, small enough that a batch of a million rows is not one buffer
/// (and, with LZ4, each piece is one compressed block of ClickHouse's usual size).
const INSERT_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("batch {batch_seq} of partition {partition} is in `{table}` only in part ({found} of {expected} rows)")]
    PartialBatch { table: &'static str, partition: u16, batch_seq: u64, found: u64, expected: u64 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Input topic names, for the `source` column of rejects and duplicates.
#[derive(Clone, Debug)]
pub struct TopicNames {
    pub lane_tx: String,
    pub account_events: String,
}

impl TopicNames {
    pub fn name(&self, t: Topic) -> &str {
        match t {
            Topic::LaneTx => &self.lane_tx,
            Topic::AccountEvents => &self.account_events,
        }
    }
}

/// The offset ranges one batch covers: `[lane_from, lane_to)` and `[acct_from, acct_to)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ranges {
    pub lane_from: i64,
    pub lane_to: i64,
    pub acct_from: i64,
    pub acct_to: i64,
}

/// A row of `gantry_batches`.
#[derive(Clone, Debug, Row, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchRecord {
    pub gantry_partition: u16,
    pub batch_seq: u64,
    pub phase: String,
    pub lane_from: i64,
    pub lane_to: i64,
    pub acct_from: i64,
    pub acct_to: i64,
    pub messages: u64,
    pub lane_records: u64,
    pub settled: u64,
    pub lane_rejected: u64,
    pub lane_duplicates: u64,
    pub account_events: u64,
    pub events_applied: u64,
    pub events_rejected: u64,
    pub events_duplicates: u64,
    pub written_at: u32,
    pub instance: String,
}

impl BatchRecord {
    pub fn ranges(&self) -> Ranges {
        Ranges { lane_from: self.lane_from, lane_to: self.lane_to, acct_from: self.acct_from, acct_to: self.acct_to }
    }
    pub fn is_committed(&self) -> bool {
        self.phase == PHASE_COMMITTED
    }
}

pub const PHASE_PLANNED: &str = "planned";
pub const PHASE_COMMITTED: &str = "committed";

/// A row of `gantry_checkpoints`: the engine state after `batch_seq`.
#[derive(Clone, Debug, Row, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub gantry_partition: u16,
    pub batch_seq: u64,
    pub lane_next: i64,
    pub acct_next: i64,
    #[serde(with = "serde_bytes_compat")]
    pub state: Vec<u8>,
    pub written_at: u32,
}

/// `String` columns hold bytes; serde's `Vec<u8>` would be an Array(UInt8).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_str<E>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_string<E>(self, v: String) -> Result<Vec<u8>, E> {
                Ok(v.into_bytes())
            }
        }
        d.deserialize_bytes(V)
    }
}

/// How INSERT bodies travel to ClickHouse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InsertCompression {
    /// LZ4: about 3.5× fewer bytes on the wire, for a ClickHouse across a network.
    #[default]
    Lz4,
    /// Uncompressed: for a ClickHouse on the same host, where compressing only costs CPU on
    /// both sides (measured: LZ4 was ~11% of Gantry's CPU during a drain on loopback).
    None,
}

/// A connection to Gantry's database.
#[derive(Clone)]
pub struct Store {
    inserts: Client,
    queries: Client,
    database: String,
    url: String,
}

fn now_secs() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

impl Store {
    pub fn new(url: &str, database: &str) -> Store {
        let base = Client::default().with_url(url).with_database(database).with_validation(false);
        Store {
            inserts: base.clone().with_compression(Compression::Lz4),
            queries: base.with_compression(Compression::None),
            database: database.to_string(),
            url: url.to_string(),
        }
    }

    /// Sets how INSERT bodies are compressed (queries stay uncompressed, as 18.16 needs).
    pub fn with_insert_compression(mut self, c: InsertCompression) -> Store {
        self.inserts = self.inserts.with_compression(match c {
            InsertCompression::Lz4 => Compression::Lz4,
            InsertCompression::None => Compression::None,
        });
        self
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// A client for ad-hoc queries (uncompressed, as 18.16 needs).
    pub fn query_client(&self) -> &Client {
        &self.queries
    }

    /// Creates the database and every table and view; safe to run again.
    pub async fn apply_schema(&self) -> Result<()> {
        let root = Client::default().with_url(&self.url).with_validation(false).with_compression(Compression::None);
        root.query(&format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database)).execute().await?;
        for stmt in schema::statements() {
            self.queries.query(&stmt).execute().await?;
        }
        Ok(())
    }

    /// Drops the database (tests).
    pub async fn drop_database(&self) -> Result<()> {
        let root = Client::default().with_url(&self.url).with_validation(false).with_compression(Compression::None);
        root.query(&format!("DROP DATABASE IF EXISTS `{}`", self.database)).execute().await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        self.queries.query("SELECT 1").execute().await?;
        Ok(())
    }

    fn batch_record(partition: u16, seq: u64, phase: &str, r: Ranges, c: &Counts, instance: &str) -> BatchRecord {
        BatchRecord {
            gantry_partition: partition,
            batch_seq: seq,
            phase: phase.to_string(),
            lane_from: r.lane_from,
            lane_to: r.lane_to,
            acct_from: r.acct_from,
            acct_to: r.acct_to,
            messages: c.messages,
            lane_records: c.lane_records,
            settled: c.settled,
            lane_rejected: c.lane_rejected,
            lane_duplicates: c.lane_duplicates,
            account_events: c.account_events,
            events_applied: c.events_applied,
            events_rejected: c.events_rejected,
            events_duplicates: c.events_duplicates,
            written_at: now_secs(),
            instance: instance.to_string(),
        }
    }

    async fn insert_one<T: Row + Serialize + for<'a> clickhouse::RowWrite<Value<'a> = T>>(&self, table: &str, row: &T) -> Result<()> {
        let mut ins = self.inserts.insert::<T>(table).await?;
        ins.write(row).await?;
        ins.end().await?;
        Ok(())
    }

    /// Records the inputs of batch `seq` before any of its rows is written.
    pub async fn plan_batch(&self, partition: u16, seq: u64, r: Ranges, instance: &str) -> Result<()> {
        self.insert_one("gantry_batches", &Self::batch_record(partition, seq, PHASE_PLANNED, r, &Counts::default(), instance)).await
    }

    /// Marks batch `seq` as fully written.
    pub async fn commit_batch(&self, partition: u16, seq: u64, r: Ranges, counts: &Counts, instance: &str) -> Result<()> {
        self.insert_one("gantry_batches", &Self::batch_record(partition, seq, PHASE_COMMITTED, r, counts, instance)).await
    }

    /// Every batch record of `partition` after `seq`, in order; the committed record of a batch
    /// wins over its planned one.
    pub async fn batches_after(&self, partition: u16, seq: u64) -> Result<Vec<BatchRecord>> {
        let mut rows: Vec<BatchRecord> = self
            .queries
            .query("SELECT ?fields FROM gantry_batches WHERE gantry_partition = ? AND batch_seq > ? ORDER BY batch_seq, phase = 'committed'")
            .bind(partition)
            .bind(seq)
            .fetch_all()
            .await?;
        // Keep the last record per batch (committed sorts after planned).
        let mut out: Vec<BatchRecord> = Vec::with_capacity(rows.len());
        for r in rows.drain(..) {
            match out.last_mut() {
                Some(last) if last.batch_seq == r.batch_seq => *last = r,
                _ => out.push(r),
            }
        }
        Ok(out)
    }

    pub async fn write_checkpoint(&self, c: &CheckpointRecord) -> Result<()> {
        self.insert_one("gantry_checkpoints", c).await
    }

    /// The newest checkpoint of `partition`, if any.
    pub async fn latest_checkpoint(&self, partition: u16) -> Result<Option<CheckpointRecord>> {
        Ok(self
            .queries
            .query("SELECT ?fields FROM gantry_checkpoints WHERE gantry_partition = ? ORDER BY batch_seq DESC LIMIT 1")
            .bind(partition)
            .fetch_optional()
            .await?)
    }

    /// Rows of batch `seq` in `table`.
    async fn rows_of_batch(&self, table: &str, partition: u16, seq: u64) -> Result<u64> {
        Ok(self
            .queries
            .query(&format!("SELECT count() FROM {table} WHERE gantry_partition = ? AND batch_seq = ?"))
            .bind(partition)
            .bind(seq)
            .fetch_one::<u64>()
            .await?)
    }

    /// Writes every table's rows of `batch` as batch `seq` of `partition`: one INSERT per
    /// table. With `only_missing`, tables that already hold the batch are skipped (recovery
    /// of a batch that was planned but not committed).
    ///
    /// Rows go out sorted by their table's `ORDER BY` key (see schema.sql; the keys below must
    /// match it). ClickHouse sorts every inserted block by that key anyway; handed rows in
    /// order, it skips the shuffle of every column, and the insert costs it 2–3.5× less CPU
    /// (measured on 18.16: settlements 90 → 46, splits 57 → 19, ledger 45 → 13 ticks for
    /// 0.3M rows), which on a machine shared with ClickHouse is Gantry's throughput.
    pub async fn write_batch(&self, partition: u16, seq: u64, batch: &Batch, topics: &TopicNames, only_missing: bool) -> Result<()> {
        for table in encode_batch(batch, partition, seq, topics) {
            if only_missing {
                let found = self.rows_of_batch(table.name, partition, seq).await?;
                if found == table.rows as u64 {
                    continue;
                }
                if found != 0 {
                    return Err(StoreError::PartialBatch { table: table.name, partition, batch_seq: seq, found, expected: table.rows as u64 });
                }
            }
            let mut ins = self.inserts.insert_formatted_with(format!("INSERT INTO {} ({}) FORMAT RowBinary", table.name, table.columns));
            for piece in table.pieces {
                ins.send(piece.into()).await?;
            }
            ins.end().await?;
        }
        Ok(())
    }
}

/// One table's rows of a batch as INSERT body pieces (RowBinary, in the table's ORDER BY
/// order, each piece about [`INSERT_CHUNK_BYTES`]).
pub struct EncodedTable {
    pub name: &'static str,
    pub columns: &'static str,
    pub rows: usize,
    pub pieces: Vec<Vec<u8>>,
}

/// How far ahead of the row being encoded its successors in sort order are prefetched:
/// rows are visited in key order, i.e. at random in the batch, and each visit was a cache
/// miss on the row and another on its text. Rows come 16 ahead, their text 8 ahead (by then
/// the row itself is in cache to say where the text is).
const PREFETCH_ROWS_AHEAD: usize = 16;
const PREFETCH_TEXT_AHEAD: usize = 8;

#[inline(always)]
fn prefetch<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const u8 as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Encodes every non-empty table of a batch (a pure function: the journal's recovery and the
/// benchmarks call it too). Row order is each table's `ORDER BY` (see `schema.sql`):
/// ClickHouse sorts an inserted block anyway, and handed a sorted one it skips the shuffle.
pub fn encode_batch(batch: &Batch, partition: u16, seq: u64, topics: &TopicNames) -> Vec<EncodedTable> {
    let tag = Tag { gantry_partition: partition, batch_seq: seq };
    let t = |x| batch.text(x);
    let mut tables = Vec::new();
    macro_rules! table {
        ($name:literal, $columns:expr, $rows:expr, $prefix:expr, $key:expr, $text:expr, $encode:expr) => {
            let rows = &$rows;
            if !rows.is_empty() {
                let order = insert_order(rows.len(), |i| $prefix(&rows[i]), |a, b| $key(&rows[a]).cmp(&$key(&rows[b])));
                let mut pieces = Vec::new();
                let mut body = Vec::with_capacity(INSERT_CHUNK_BYTES + 4096);
                for (n, &i) in order.iter().enumerate() {
                    if let Some(&ahead) = order.get(n + PREFETCH_ROWS_AHEAD) {
                        prefetch(&rows[ahead as usize]);
                    }
                    if let Some(&ahead) = order.get(n + PREFETCH_TEXT_AHEAD) {
                        prefetch(batch.text_bytes($text(&rows[ahead as usize])));
                    }
                    $encode(&rows[i as usize], &mut body);
                    if body.len() >= INSERT_CHUNK_BYTES {
                        pieces.push(std::mem::replace(&mut body, Vec::with_capacity(INSERT_CHUNK_BYTES + 4096)));
                    }
                }
                if !body.is_empty() {
                    pieces.push(body);
                }
                tables.push(EncodedTable { name: $name, columns: $columns, rows: rows.len(), pieces });
            }
        };
    }
    // The text prefetched is one near the start of the row's texts in the arena (they were pushed together).
    let x = |x| batch.text_bytes(x);
    let secs = |ms: i64| ms.div_euclid(1000);
    // Widths: each text's usual length fits with a byte to spare (see `order.rs`), so the
    // compact key is the whole key for nearly every row.
    table!("settlements", SETTLEMENT_COLUMNS, batch.settlements,
        |r: &Settlement| KeyBytes::new().int(r.trade_day as i64, 4).text(x(r.trade_id), 28).finish(),
        |r: &Settlement| (r.trade_day, t(r.trade_id)),
        |r: &Settlement| r.trade_id, |r, out| settlement_row(batch, r, tag, out));
    table!("settlement_splits", SPLIT_COLUMNS, batch.splits,
        |r: &SplitRow| KeyBytes::new().int(r.trade_day as i64, 4).text(x(r.owner_id), 12).text(x(r.interval_id), 16).finish(),
        |r: &SplitRow| (r.trade_day, t(r.owner_id), t(r.interval_id)),
        |r: &SplitRow| r.interval_id, |r, out| split_row(batch, r, tag, out));
    table!("ledger", LEDGER_COLUMNS, batch.ledger,
        |r: &LedgerRow| KeyBytes::new().text(x(r.customer_id), 11).text(x(r.card_id), 21).finish(),
        |r: &LedgerRow| (t(r.customer_id), t(r.card_id), secs(r.time_ms)),
        |r: &LedgerRow| r.card_id, |r, out| ledger_row(batch, r, tag, out));
    table!("rejects", REJECT_COLUMNS, batch.rejects,
        |r: &RejectRow| KeyBytes::new().text(r.reason.as_bytes(), 24).int(secs(r.time_ms), 8).finish(),
        |r: &RejectRow| (r.reason, secs(r.time_ms)),
        |r: &RejectRow| r.detail, |r, out| reject_row(batch, r, topics, tag, out));
    table!("duplicates", DUPLICATE_COLUMNS, batch.duplicates,
        |r: &DuplicateRow| KeyBytes::new().int(secs(r.time_ms), 8).text(x(r.id), 24).finish(),
        |r: &DuplicateRow| (secs(r.time_ms), t(r.id)),
        |r: &DuplicateRow| r.id, |r, out| duplicate_row(batch, r, topics, tag, out));
    table!("status_list", STATUS_COLUMNS, batch.status,
        |r: &StatusRow| KeyBytes::new().text(x(r.card_id), 24).int(secs(r.time_ms), 8).finish(),
        |r: &StatusRow| (t(r.card_id), secs(r.time_ms)),
        |r: &StatusRow| r.card_id, |r, out| status_row(batch, r, tag, out));
    tables
}
