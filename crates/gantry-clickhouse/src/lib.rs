//! Gantry's ClickHouse side: the schema (contract §4), Native-format encodings of the core's
//! output rows (`rows.rs`), and the batch journal that makes writes exactly once.
//!
//! Contract with the pipeline (see ARCHITECTURE.md): for a group of batches, call
//! [`Store::plan_batches`], then [`Store::write_batches`], then [`Store::commit_batches`].
//! Each table gets one INSERT per group, every row tagged with its own batch's
//! `(gantry_partition, batch_seq)`; with `only_missing` set (recovery and retries), a table
//! that already holds a batch's rows is not written for that batch again.
//!
//! ClickHouse 18.16 notes: queries run uncompressed (18.16 answers compressed SELECTs with an
//! empty body), inserts use LZ4 (or none); output rows go as Native blocks, the journal and
//! checkpoints as RowBinary without schema validation (18.16 lacks
//! `RowBinaryWithNamesAndTypes`); `DateTime` is seconds (u32), `Date` is days (u16).

#![forbid(unsafe_code)]

mod order;
mod rows;
pub mod schema;

use clickhouse::{Client, Compression, Row};
use gantry_core::output::{
    Batch, CardRow, ClearingRow, Counts, DuplicateRow, LedgerRow, RejectRow, Settlement, SplitRow,
    StatusRow, Topic, UsageRow,
};
use serde::{Deserialize, Serialize};

use order::{insert_order, KeyBytes};
use rows::*;

/// How long an idle connection to ClickHouse is kept: under the server's keep-alive
/// timeout (3 s by default on releases before 23.11), so the client never reuses one the
/// server is closing.
const POOL_IDLE_MS: u64 = 2_000;
/// TCP keep-alive probes on connections to ClickHouse, to notice a dead peer.
const TCP_KEEPALIVE_S: u64 = 60;

/// A ClickHouse client whose connections set `TCP_NODELAY`. The crate's default client
/// leaves Nagle's algorithm on: the last small piece of a request body then waits for the
/// server's delayed ACK, and every INSERT (an audit row, a journal row) took 40 ms more
/// than the server needed (2 ms).
pub fn http_client() -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(std::time::Duration::from_secs(TCP_KEEPALIVE_S)));
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_millis(POOL_IDLE_MS))
        .build(connector);
    Client::with_http_client(http)
}

/// Most bytes of an INSERT body handed to the HTTP client at once: large enough that the
/// per-send cost vanishes, small enough that a column of a million rows is not one send
/// (and, with LZ4, each piece is one compressed block of ClickHouse's usual size).
const INSERT_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("batch {batch_seq} of partition {partition} is in `{table}` only in part ({found} of {expected} rows)")]
    PartialBatch { table: &'static str, partition: u16, batch_seq: u64, found: u64, expected: u64 },
    /// A store other than ClickHouse's client could not answer (the simulator's outages).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What rows are encoded with besides their batch: the input topic names (for the
/// `source` column of rejects and duplicates) and the key ring plates are sealed with
/// (contract §5.2; `None`: no key configured, so plates are not stored at all).
#[derive(Clone, Debug)]
pub struct TopicNames {
    pub lane_tx: String,
    pub account_events: String,
    pub plates: Option<std::sync::Arc<gantry_pii::Keyring>>,
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
    /// The clock the batch's records were checked against (ms since 1970; 0 in rows written
    /// before the column existed: no clock).
    pub clock_ms: i64,
    /// The tariff set the batch was priced with ([`TariffSetRecord::set_id`]; 0 in rows
    /// written before the column existed: priced with the set loaded at the time, unknown).
    pub tariff_set: u64,
    /// How the batch was processed, for a replay to process it the same way: 0 (rows
    /// written before the column existed) rejected lane records older than the dedup
    /// window; [`JOURNAL_FORMAT`] parks them and looks them up (`late_known`).
    pub journal_format: u8,
    /// Of the lane records the batch parked as late, in order, the indexes of those whose
    /// `tradeId` the lookup found settled in an earlier batch: the answers a replay decides
    /// them by (it cannot ask again: by then the batch's own rows may be there).
    pub late_known: Vec<u32>,
}

/// [`BatchRecord::journal_format`] of the batches this release journals.
pub const JOURNAL_FORMAT: u8 = 1;

impl BatchRecord {
    pub fn ranges(&self) -> Ranges {
        Ranges {
            lane_from: self.lane_from,
            lane_to: self.lane_to,
            acct_from: self.acct_from,
            acct_to: self.acct_to,
        }
    }
    pub fn is_committed(&self) -> bool {
        self.phase == PHASE_COMMITTED
    }
}

/// A row of `gantry_owners`: who took partition `gantry_partition` at `epoch`.
#[derive(Clone, Debug, Row, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerRecord {
    pub gantry_partition: u16,
    pub epoch: u64,
    pub instance: String,
    pub taken_at: u32,
}

/// A partition taken: the epoch this owner writes under, and who owned it before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    pub epoch: u64,
    pub previous: Option<String>,
}

/// A row of `gantry_tariffs`: one tariff version's files, stored before any batch priced
/// with it is journaled, so a replay can rebuild it whatever the tariff directory holds by
/// then. Rows are only added; a version's content never changes (a changed file is a new
/// version), so any row of a `(version, source_hash)` is the version.
#[derive(Clone, Debug, Row, Serialize, Deserialize, PartialEq, Eq)]
pub struct TariffRecord {
    pub version: String,
    pub source_hash: u64,
    pub effective_from_ms: i64,
    pub tariff_toml: String,
    pub intervals_csv: String,
    pub written_at: u32,
    pub instance: String,
}

/// A row of `gantry_tariff_sets`: which versions (by name and content) a tariff set held.
/// Batches journal the set's id (`gantry_batches.tariff_set`).
#[derive(Clone, Debug, Row, Serialize, Deserialize, PartialEq, Eq)]
pub struct TariffSetRecord {
    pub set_id: u64,
    pub versions: Vec<String>,
    pub source_hashes: Vec<u64>,
    pub written_at: u32,
    pub instance: String,
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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl Store {
    pub fn new(url: &str, database: &str) -> Store {
        let base = http_client().with_url(url).with_database(database).with_validation(false);
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
        let root = http_client()
            .with_url(&self.url)
            .with_validation(false)
            .with_compression(Compression::None);
        root.query(&format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database)).execute().await?;
        for object in schema::DROPPED {
            self.queries.query(&format!("DROP TABLE IF EXISTS {object}")).execute().await?;
        }
        // A table about to be rebuilt gets its added columns first, so the copy can name them.
        self.add_missing_columns().await?;
        for r in schema::REBUILT {
            if self.shape_of(r.table).await?.is_some_and(|(engine, key)| !r.shape.is(&engine, &key))
            {
                let sql = format!("RENAME TABLE {} TO {}", r.table, r.legacy);
                self.queries.query(&sql).execute().await?;
            }
        }
        let mut fills = Vec::new();
        for b in schema::BACKFILLED {
            let (absent, from) = (self.shape_of(b.table).await?, self.shape_of(b.from).await?);
            if absent.is_none() && from.is_some() {
                fills.push(b);
            }
        }
        for stmt in schema::STATEMENTS {
            self.queries.query(stmt.sql).execute().await?;
        }
        for b in fills {
            for sql in b.fill {
                self.queries.query(sql).execute().await?;
            }
        }
        for r in schema::REBUILT {
            if self.shape_of(r.legacy).await?.is_some() {
                let copy = r.copy.replace("{legacy}", r.legacy);
                self.queries.query(&format!("INSERT INTO {} {copy}", r.table)).execute().await?;
                self.queries.query(&format!("DROP TABLE {}", r.legacy)).execute().await?;
            }
        }
        self.add_missing_columns().await
    }

    /// Columns added since a table was first created, to the tables that exist and lack
    /// them (`CREATE TABLE IF NOT EXISTS` leaves an existing table as it is, and 18.16 has
    /// no `ADD COLUMN IF NOT EXISTS`).
    async fn add_missing_columns(&self) -> Result<()> {
        for c in schema::ADDED_COLUMNS {
            let (tables, present): (u64, u64) = self
                .queries
                .query("SELECT (SELECT count() FROM system.tables WHERE database = ? AND name = ?), (SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?)")
                .bind(&self.database)
                .bind(c.table)
                .bind(&self.database)
                .bind(c.table)
                .bind(c.column)
                .fetch_one()
                .await?;
            if tables == 1 && present == 0 {
                let sql =
                    format!("ALTER TABLE {} ADD COLUMN {} {}", c.table, c.column, c.definition);
                self.queries.query(&sql).execute().await?;
            }
        }
        Ok(())
    }

    /// The engine and sort key of `table` in this database, if it exists.
    async fn shape_of(&self, table: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .queries
            .query("SELECT engine, sorting_key FROM system.tables WHERE database = ? AND name = ?")
            .bind(&self.database)
            .bind(table)
            .fetch_optional::<(String, String)>()
            .await?)
    }

    /// Drops the database (tests).
    pub async fn drop_database(&self) -> Result<()> {
        let root = http_client()
            .with_url(&self.url)
            .with_validation(false)
            .with_compression(Compression::None);
        root.query(&format!("DROP DATABASE IF EXISTS `{}`", self.database)).execute().await?;
        Ok(())
    }

    /// The journal row of `b` in `phase`, with counts `c` (zero in a *planned* row).
    pub fn batch_record(b: &JournalEntry, phase: &str, c: &Counts, instance: &str) -> BatchRecord {
        let r = b.ranges;
        BatchRecord {
            gantry_partition: b.partition,
            batch_seq: b.seq,
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
            clock_ms: b.clock_ms,
            tariff_set: b.tariff_set,
            journal_format: JOURNAL_FORMAT,
            late_known: b.late_known.clone(),
        }
    }

    async fn insert_one<T: Row + Serialize + for<'a> clickhouse::RowWrite<Value<'a> = T>>(
        &self,
        table: &str,
        row: &T,
    ) -> Result<()> {
        let mut ins = self.inserts.insert::<T>(table).await?;
        ins.write(row).await?;
        ins.end().await?;
        Ok(())
    }

    /// Records the inputs of each batch before any of its rows is written: one INSERT of a
    /// *planned* row per batch (one part: all or none).
    pub async fn plan_batches(&self, batches: &[JournalEntry], instance: &str) -> Result<()> {
        let planned = Counts::default();
        self.insert_records(
            PHASE_PLANNED,
            batches,
            batches.iter().map(|b| Self::batch_record(b, PHASE_PLANNED, &planned, instance)),
        )
        .await
    }

    /// Marks each batch as fully written: one INSERT of a *committed* row per batch, with its
    /// counts (one part: all or none).
    pub async fn commit_batches(&self, batches: &[JournalEntry], instance: &str) -> Result<()> {
        self.insert_records(
            PHASE_COMMITTED,
            batches,
            batches.iter().map(|b| Self::batch_record(b, PHASE_COMMITTED, &b.counts, instance)),
        )
        .await
    }

    async fn insert_records(
        &self,
        phase: &str,
        batches: &[JournalEntry],
        records: impl Iterator<Item = BatchRecord>,
    ) -> Result<()> {
        let id = self.query_id(
            &format!("gantry_batches:{phase}"),
            batches.iter().map(|b| (b.partition, b.seq)),
        );
        let mut ins =
            self.inserts.insert::<BatchRecord>("gantry_batches").await?.with_option("query_id", id);
        for r in records {
            ins.write(&r).await?;
        }
        ins.end().await?;
        Ok(())
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

    /// The newest checkpoint of `partition`, if any. Two reads, so only one state is read:
    /// the newest batch number (a small column), then that checkpoint's row by its key.
    /// (Sorting the partition's rows by batch read every state it held; older ones linger
    /// until ClickHouse merges them away.)
    pub async fn latest_checkpoint(&self, partition: u16) -> Result<Option<CheckpointRecord>> {
        let newest: Option<u64> = self
            .queries
            .query("SELECT max(batch_seq) FROM gantry_checkpoints WHERE gantry_partition = ? HAVING count() > 0")
            .bind(partition)
            .fetch_optional()
            .await?;
        let Some(seq) = newest else { return Ok(None) };
        Ok(self
            .by_key("SELECT ?fields FROM gantry_checkpoints WHERE gantry_partition = ? AND batch_seq = ? LIMIT 1")
            .bind(partition)
            .bind(seq)
            .fetch_optional()
            .await?)
    }

    /// Of these `(local day, tradeId)` pairs, the trade ids that `settlements` holds for
    /// partition `p` — settled by an earlier batch: the late-record lookup (contract §3).
    /// Reads by the table's key, `(trade_date, trade_id)`, so a day's worth of ids costs a
    /// few granules, not a scan; asks [`LATE_LOOKUP_IDS_MAX`] ids at a time.
    pub async fn settled_trade_ids(
        &self,
        p: u16,
        ids: &[(i32, &str)],
    ) -> Result<std::collections::HashSet<String>> {
        let mut found = std::collections::HashSet::new();
        for chunk in ids.chunks(LATE_LOOKUP_IDS_MAX) {
            let mut days: Vec<i32> = chunk.iter().map(|(d, _)| *d).collect();
            days.sort_unstable();
            days.dedup();
            let days: Vec<String> = days
                .iter()
                .map(|&d| format!("'{}'", gantry_core::time::format_date(d as i64)))
                .collect();
            let trade_ids: Vec<String> = chunk.iter().map(|(_, id)| sql_string(id)).collect();
            let sql = format!(
                "SELECT DISTINCT trade_id FROM settlements WHERE trade_date IN ({}) AND trade_id IN ({}) AND gantry_partition = {p}",
                days.join(","),
                trade_ids.join(",")
            );
            found.extend(self.by_key(&sql).fetch_all::<String>().await?);
        }
        Ok(found)
    }

    /// Takes partition `p` for `instance`: the next epoch after every earlier owner's. The
    /// owner of a partition is the row with the highest (epoch, instance); `None` if another
    /// instance took the same epoch at the same moment and wins the tie (Kafka assigns a
    /// partition to one member at a time, so this is a transient double assignment).
    pub async fn take_ownership(&self, p: u16, instance: &str) -> Result<Option<Ownership>> {
        let previous = self.owner_of(p).await?;
        let epoch = previous.as_ref().map_or(1, |o| o.epoch + 1);
        let row = OwnerRecord {
            gantry_partition: p,
            epoch,
            instance: instance.to_string(),
            taken_at: now_secs(),
        };
        self.insert_one("gantry_owners", &row).await?;
        let now = self.owner_of(p).await?;
        Ok(now
            .filter(|o| o.epoch == epoch && o.instance == instance)
            .map(|o| Ownership { epoch: o.epoch, previous: previous.map(|p| p.instance) }))
    }

    /// Makes a tariff set durable: each of its versions not stored yet, then the set. Both
    /// idempotent (a second writer adds equal rows, which readers take one of).
    pub async fn store_tariff_set(
        &self,
        set: &TariffSetRecord,
        versions: &[TariffRecord],
    ) -> Result<()> {
        if self.tariff_set(set.set_id).await?.is_some() {
            return Ok(());
        }
        let stored: Vec<u64> = self
            .queries
            .query("SELECT DISTINCT source_hash FROM gantry_tariffs WHERE has(?, source_hash)")
            .bind(&set.source_hashes)
            .fetch_all()
            .await?;
        let mut missing: Vec<&TariffRecord> = Vec::new();
        for v in versions {
            if !stored.contains(&v.source_hash) {
                missing.push(v);
            }
        }
        if !missing.is_empty() {
            let mut ins = self.inserts.insert::<TariffRecord>("gantry_tariffs").await?;
            for v in missing {
                ins.write(v).await?;
            }
            ins.end().await?;
        }
        self.insert_one("gantry_tariff_sets", set).await
    }

    /// The stored set `set_id`, if any.
    pub async fn tariff_set(&self, set_id: u64) -> Result<Option<TariffSetRecord>> {
        Ok(self
            .queries
            .query("SELECT ?fields FROM gantry_tariff_sets WHERE set_id = ? LIMIT 1")
            .bind(set_id)
            .fetch_optional()
            .await?)
    }

    /// The stored versions of these contents (one row each, any order).
    pub async fn tariffs_by_hash(&self, hashes: &[u64]) -> Result<Vec<TariffRecord>> {
        Ok(self
            .queries
            .query("SELECT ?fields FROM gantry_tariffs WHERE has(?, source_hash) LIMIT 1 BY source_hash")
            .bind(hashes)
            .fetch_all()
            .await?)
    }

    /// The content hashes stored under each of these version names: a name stored with
    /// another hash than the one on disk is a version whose files were changed after use.
    pub async fn tariff_hashes_named(&self, names: &[String]) -> Result<Vec<(String, u64)>> {
        Ok(self
            .queries
            .query("SELECT DISTINCT version, source_hash FROM gantry_tariffs WHERE has(?, version)")
            .bind(names)
            .fetch_all()
            .await?)
    }

    /// The current owner of partition `p` (highest epoch, then instance), if any.
    pub async fn owner_of(&self, p: u16) -> Result<Option<OwnerRecord>> {
        Ok(self
            .queries
            .query("SELECT ?fields FROM gantry_owners WHERE gantry_partition = ? ORDER BY epoch DESC, instance DESC LIMIT 1")
            .bind(p)
            .fetch_optional()
            .await?)
    }

    /// The current epoch of each of `partitions` (0 for one never owned).
    pub async fn epochs(&self, partitions: &[u16]) -> Result<Vec<(u16, u64)>> {
        let list: Vec<String> = partitions.iter().map(u16::to_string).collect();
        let sql = format!(
            "SELECT gantry_partition, max(epoch) FROM gantry_owners WHERE gantry_partition IN ({}) GROUP BY gantry_partition",
            if list.is_empty() { "0".to_string() } else { list.join(",") }
        );
        Ok(self.queries.query(&sql).fetch_all::<(u16, u64)>().await?)
    }

    /// Gantry's INSERTs still running on the server for partition `p` (by their query ids):
    /// an earlier owner's, cut off mid-write or paused.
    pub async fn running_inserts(&self, p: u16) -> Result<u64> {
        Ok(self
            .queries
            .query("SELECT count() FROM system.processes WHERE query_id LIKE ?")
            .bind(self.partition_query_ids(p))
            .fetch_one()
            .await?)
    }

    /// Asks the server to stop every INSERT of Gantry's running for partition `p`. A killed
    /// INSERT writes nothing; the caller waits until `running_inserts` is 0.
    pub async fn kill_running_inserts(&self, p: u16) -> Result<()> {
        self.queries
            .query("KILL QUERY WHERE query_id LIKE ? ASYNC")
            .bind(self.partition_query_ids(p))
            .execute()
            .await?;
        Ok(())
    }

    /// A `LIKE` pattern of the query ids of every INSERT naming a batch of partition `p`.
    fn partition_query_ids(&self, p: u16) -> String {
        format!("gantry|{}|%|{p}.%", self.database)
    }

    /// A query that must read through its table's primary index: ClickHouse refuses it
    /// (`force_primary_key`) if its conditions cannot use the key, instead of scanning a
    /// table of billions of rows.
    fn by_key(&self, sql: &str) -> clickhouse::query::Query {
        self.queries.query(sql).with_option("force_primary_key", "1")
    }

    /// Whether table `T` holds batch `b`'s rows: all of them (`true`), none (`false`; also
    /// when the batch has none for it), or some — an error, which single-part INSERTs rule
    /// out. A batch's rows of a table arrive in one part, so its first and last row stand
    /// for all of them: each is looked up by the table's key (a few granules; counting the
    /// batch's rows instead read the whole table, as its tag is not a prefix of the key)
    /// and must be there as often as the batch has rows of that key.
    async fn holds_batch<T: OutputTable>(&self, b: &BatchToWrite<'_>) -> Result<bool> {
        let rows = T::rows(b.batch);
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(false) };
        let tag = Tag { gantry_partition: b.partition, batch_seq: b.seq };
        let expected = |row: &T| {
            let key = row.key(b.batch, tag);
            rows.iter().filter(|r| r.key(b.batch, tag) == key).count() as u64
        };
        let (k1, k2) = (
            first.key_where(b.batch, KeyWhere::new(T::NAME)).finish(),
            last.key_where(b.batch, KeyWhere::new(T::NAME)).finish(),
        );
        let sql = format!(
            "SELECT countIf({k1}), countIf({k2}) FROM {} WHERE (({k1}) OR ({k2})) AND gantry_partition = {} AND batch_seq = {}",
            T::NAME,
            b.partition,
            b.seq
        );
        let found: (u64, u64) = self.by_key(&sql).fetch_one().await?;
        let want = (expected(first), expected(last));
        if found == want {
            return Ok(true);
        }
        if found == (0, 0) {
            return Ok(false);
        }
        Err(StoreError::PartialBatch {
            table: T::NAME,
            partition: b.partition,
            batch_seq: b.seq,
            found: found.0 + found.1,
            expected: want.0 + want.1,
        })
    }

    /// The output tables that already hold batch `b`'s rows (see [`Store::holds_batch`]).
    async fn tables_holding(&self, b: &BatchToWrite<'_>) -> Result<Vec<&'static str>> {
        let held = [
            self.holds_batch::<Settlement>(b).await?,
            self.holds_batch::<SplitRow>(b).await?,
            self.holds_batch::<LedgerRow>(b).await?,
            self.holds_batch::<RejectRow>(b).await?,
            self.holds_batch::<DuplicateRow>(b).await?,
            self.holds_batch::<StatusRow>(b).await?,
            self.holds_batch::<ClearingRow>(b).await?,
            self.holds_batch::<UsageRow>(b).await?,
            self.holds_batch::<CardRow>(b).await?,
        ];
        Ok(OUTPUT_TABLES.iter().zip(held).filter(|(_, h)| *h).map(|((t, _), _)| *t).collect())
    }

    /// Writes several batches (of different partitions) with one INSERT per table: a group
    /// commit. Each INSERT is a single part (the caller keeps a group under
    /// [`GROUP_ROWS_MAX`] rows per table), so every table holds all of a batch's rows or
    /// none, exactly as with one batch per INSERT, while ClickHouse makes a part per table
    /// per group instead of per batch (fewer files, fewer merges).
    ///
    /// With `only_missing`, each table is written only for the batches it holds no rows of;
    /// a batch found there in part is an error (it cannot happen with single-part inserts).
    ///
    /// Rows go out sorted by their table's `ORDER BY` key across the whole group (see
    /// [`encode_batches`]).
    pub async fn write_batches(
        &self,
        batches: &[BatchToWrite<'_>],
        topics: &TopicNames,
        only_missing: bool,
    ) -> Result<()> {
        let mut present: Vec<(&'static str, usize)> = Vec::new();
        if only_missing {
            for (i, b) in batches.iter().enumerate() {
                present.extend(self.tables_holding(b).await?.into_iter().map(|t| (t, i)));
            }
        }
        // The tables' INSERTs run concurrently: ClickHouse handles each in its own thread,
        // and one after the other left its cores idle while Gantry waited on each in turn.
        let tables = encode_batches(batches, topics, |table, i| !present.contains(&(table, i)));
        let ids = batches.iter().map(|b| (b.partition, b.seq));
        let inserts = tables.into_iter().map(|t| {
            let id = self.query_id(t.name, ids.clone());
            self.insert_table(t, id)
        });
        futures_util::future::try_join_all(inserts).await?;
        Ok(())
    }

    /// The `query_id` of an INSERT into `table` of `batches`: `gantry|db|table|p.k|p.k…`. The
    /// same batches give the same id, so ClickHouse refuses a retry while the first attempt
    /// is still running on the server (after the client gave up on it); and a new owner
    /// finds and kills any INSERT still running for its partition by the id.
    fn query_id(&self, table: &str, batches: impl Iterator<Item = (u16, u64)>) -> String {
        let mut id = format!("gantry|{}|{table}", self.database);
        for (p, k) in batches {
            id.push_str(&format!("|{p}.{k}"));
        }
        id
    }

    async fn insert_table(&self, table: EncodedTable, query_id: String) -> Result<()> {
        let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
        let mut ins = self
            .inserts
            .insert_formatted_with(format!(
                "INSERT INTO {} ({}) FORMAT Native",
                table.name,
                columns.join(", ")
            ))
            .with_option("query_id", query_id);
        for piece in table.pieces {
            // A column can be megabytes; slices of it share its buffer (no copy).
            let piece = bytes::Bytes::from(piece);
            for start in (0..piece.len()).step_by(INSERT_CHUNK_BYTES) {
                ins.send(piece.slice(start..piece.len().min(start + INSERT_CHUNK_BYTES))).await?;
            }
        }
        ins.end().await?;
        Ok(())
    }
}

/// Most rows one group of batches may put in one table. ClickHouse cuts an INSERT into blocks
/// of `max_insert_block_size` rows (default 1,048,576), each its own part; below this, an
/// INSERT is one part, which is what makes a batch all-or-nothing in each table.
pub const GROUP_ROWS_MAX: usize = 1_000_000;

/// Most trade ids one late-record lookup names: ids are at most 40 bytes (contract §1), so
/// its SQL stays near 100 KB, inside ClickHouse's `max_query_size` (256 KiB by default).
pub const LATE_LOOKUP_IDS_MAX: usize = 2_000;

/// `s` as a ClickHouse string literal (quoted, backslash and quote escaped).
fn sql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A batch's entry in the journal (`gantry_batches`).
#[derive(Clone, Debug)]
pub struct JournalEntry {
    pub partition: u16,
    pub seq: u64,
    pub ranges: Ranges,
    pub counts: Counts,
    /// The batch's clock (see [`BatchRecord::clock_ms`]).
    pub clock_ms: i64,
    /// The tariff set it was priced with (see [`BatchRecord::tariff_set`]).
    pub tariff_set: u64,
    /// The lookup's answers for its late records (see [`BatchRecord::late_known`]).
    pub late_known: Vec<u32>,
}

/// A batch to write: which partition and sequence number its rows are tagged with.
#[derive(Clone, Copy)]
pub struct BatchToWrite<'a> {
    pub partition: u16,
    pub seq: u64,
    pub batch: &'a Batch,
}

pub use rows::{ColumnList, OUTPUT_TABLES};

/// Rows per output table of a batch, in the order tables are written.
pub fn table_rows(b: &Batch) -> [(&'static str, usize); 9] {
    let rows = [
        b.settlements.len(),
        b.splits.len(),
        b.ledger.len(),
        b.rejects.len(),
        b.duplicates.len(),
        b.status.len(),
        b.clearing.len(),
        b.usage.len(),
        b.cards.len(),
    ];
    std::array::from_fn(|i| (OUTPUT_TABLES[i].0, rows[i]))
}

/// One table's rows of a batch as an INSERT body in pieces: one Native block (see
/// `rows.rs`), rows in the table's ORDER BY order.
pub struct EncodedTable {
    pub name: &'static str,
    pub columns: ColumnList,
    pub rows: usize,
    pub pieces: Vec<Vec<u8>>,
}

/// How far ahead of the row being encoded its successors in sort order are prefetched:
/// rows are visited in key order, i.e. at random in the batch, and each visit was a cache
/// miss on the row and another on its text. Rows come 16 ahead, their text 8 ahead (by then
/// the row itself is in cache to say where the text is).
const PREFETCH_ROWS_AHEAD: usize = 16;
const PREFETCH_TEXT_AHEAD: usize = 8;

use gantry_core::hint::prefetch;

/// Each output table's `ORDER BY` columns, which the key functions below compare in this
/// order (a `DateTime` as whole seconds). Tests hold this list to the schema, and the blocks
/// `encode_batches` writes to this order.
pub const SORT_KEYS: [(&str, &[&str]); 9] = [
    ("settlements", &["trade_date", "trade_id"]),
    ("settlement_splits", &["trade_date", "owner_id", "interval_id"]),
    ("ledger", &["customer_id", "card_id", "time"]),
    ("rejects", &["reason", "time"]),
    ("duplicates", &["time", "trade_id"]),
    ("status_list", &["card_id", "time"]),
    (
        "clearing_daily",
        &[
            "trade_date",
            "owner_id",
            "issuer_id",
            "vehicle_type",
            "media_type",
            "gantry_partition",
            "batch_seq",
        ],
    ),
    ("customer_usage_daily", &["customer_id", "card_id", "day", "gantry_partition", "batch_seq"]),
    ("card_activity", &["card_id", "gantry_partition", "batch_seq"]),
];

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// A row's sort key as SQL: `col = value AND …` over its table's `ORDER BY` columns
/// ([`SORT_KEYS`], in order; the batch tag that ends the rollups' keys is left to the caller),
/// so ClickHouse finds the row through the table's primary index. Each value takes the next
/// column's name; [`KeyWhere::finish`] checks every column was given one.
pub(crate) struct KeyWhere {
    names: std::slice::Iter<'static, &'static str>,
    sql: String,
}

impl KeyWhere {
    fn new(table: &str) -> KeyWhere {
        let key = SORT_KEYS.iter().find(|(t, _)| *t == table).expect("a table with a key").1;
        let untagged = key.iter().position(|c| *c == "gantry_partition").unwrap_or(key.len());
        KeyWhere { names: key[..untagged].iter(), sql: String::new() }
    }

    fn push(mut self, value: std::fmt::Arguments<'_>) -> KeyWhere {
        use std::fmt::Write;
        let name = self.names.next().expect("a value per key column");
        if !self.sql.is_empty() {
            self.sql.push_str(" AND ");
        }
        let _ = write!(self.sql, "{name} = {value}");
        self
    }

    /// A `Date` column, from days since 1970 — as the encoder writes it (clamped), so the
    /// row is found whatever its date (a day number below 65536 is a day to `toDate`).
    fn date(self, day: i32) -> KeyWhere {
        let day = rows::date(day as i64);
        self.push(format_args!("toDate({day})"))
    }

    /// A `DateTime` column, from ms since 1970 — as the encoder writes it (clamped).
    fn time(self, ms: i64) -> KeyWhere {
        let secs = rows::datetime(ms);
        self.push(format_args!("toDateTime({secs})"))
    }

    fn text(self, t: &[u8]) -> KeyWhere {
        let literal = sql_string(&String::from_utf8_lossy(t));
        self.push(format_args!("{literal}"))
    }

    fn int(self, v: i64) -> KeyWhere {
        self.push(format_args!("{v}"))
    }

    fn finish(mut self) -> String {
        assert!(self.names.next().is_none(), "a value for every key column");
        self.sql
    }
}

/// One output table as the encoder sees it: its rows in a batch, its `ORDER BY` key in full
/// ([`SORT_KEYS`]) and as a compact prefix (see `order.rs`), the text to prefetch ahead, and
/// the row's Native encoding. Prefix widths: each text's usual length fits with a byte to
/// spare, so the compact key is the whole key for nearly every row; every component of the
/// key is named, even one that no longer fits (that closes the prefix).
trait OutputTable: Sized {
    const NAME: &'static str;
    const COLUMNS: ColumnList;
    type Key<'b>: Ord
    where
        Self: 'b;
    fn rows(b: &Batch) -> &[Self];
    /// The full key; `tag` is the row's batch (part of the rollups' keys).
    fn key<'b>(&'b self, b: &'b Batch, tag: Tag) -> Self::Key<'b>;
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool);
    /// The row's key as SQL conditions (see [`KeyWhere`]), to find it by the table's index.
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere;
    /// A text near the start of the row's texts in its arena (they were pushed together).
    fn text(&self) -> gantry_core::output::Text;
    fn encode(&self, b: &Batch, topics: &TopicNames, tag: Tag, out: &mut Columns);
}

impl OutputTable for Settlement {
    const NAME: &'static str = "settlements";
    const COLUMNS: ColumnList = SETTLEMENT_COLUMNS;
    type Key<'b> = (i32, &'b [u8]);
    fn rows(b: &Batch) -> &[Self] {
        &b.settlements
    }
    fn key<'b>(&'b self, b: &'b Batch, _: Tag) -> Self::Key<'b> {
        (self.trade_day, b.text_bytes(self.trade_id))
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        KeyBytes::new().int(self.trade_day as i64, 4).text(b.text_bytes(self.trade_id), 28).finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.date(self.trade_day).text(b.text_bytes(self.trade_id))
    }
    fn text(&self) -> gantry_core::output::Text {
        self.trade_id
    }
    fn encode(&self, b: &Batch, topics: &TopicNames, tag: Tag, out: &mut Columns) {
        settlement_row(b, self, topics.plates.as_deref(), tag, out)
    }
}

impl OutputTable for SplitRow {
    const NAME: &'static str = "settlement_splits";
    const COLUMNS: ColumnList = SPLIT_COLUMNS;
    type Key<'b> = (i32, &'b [u8], &'b [u8]);
    fn rows(b: &Batch) -> &[Self] {
        &b.splits
    }
    fn key<'b>(&'b self, b: &'b Batch, _: Tag) -> Self::Key<'b> {
        (self.trade_day, b.text_bytes(self.owner_id), b.text_bytes(self.interval_id))
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        KeyBytes::new()
            .int(self.trade_day as i64, 4)
            .text(b.text_bytes(self.owner_id), 12)
            .text(b.text_bytes(self.interval_id), 16)
            .finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.date(self.trade_day)
            .text(b.text_bytes(self.owner_id))
            .text(b.text_bytes(self.interval_id))
    }
    fn text(&self) -> gantry_core::output::Text {
        self.interval_id
    }
    fn encode(&self, b: &Batch, _: &TopicNames, tag: Tag, out: &mut Columns) {
        split_row(b, self, tag, out)
    }
}

impl OutputTable for LedgerRow {
    const NAME: &'static str = "ledger";
    const COLUMNS: ColumnList = LEDGER_COLUMNS;
    type Key<'b> = (&'b [u8], &'b [u8], i64);
    fn rows(b: &Batch) -> &[Self] {
        &b.ledger
    }
    fn key<'b>(&'b self, b: &'b Batch, _: Tag) -> Self::Key<'b> {
        (b.text_bytes(self.customer_id), b.text_bytes(self.card_id), secs(self.time_ms))
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        // The time does not fit in the 32 bytes: naming it closes the prefix, so a card's
        // rows are put in time order by the full key (left out, the prefix claimed to hold
        // the whole key and a card's rows kept the batch's order, not the time's).
        KeyBytes::new()
            .text(b.text_bytes(self.customer_id), 11)
            .text(b.text_bytes(self.card_id), 21)
            .int(secs(self.time_ms), 8)
            .finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.text(b.text_bytes(self.customer_id)).text(b.text_bytes(self.card_id)).time(self.time_ms)
    }
    fn text(&self) -> gantry_core::output::Text {
        self.card_id
    }
    fn encode(&self, b: &Batch, topics: &TopicNames, tag: Tag, out: &mut Columns) {
        ledger_row(b, self, topics.plates.as_deref(), tag, out)
    }
}

impl OutputTable for RejectRow {
    const NAME: &'static str = "rejects";
    const COLUMNS: ColumnList = REJECT_COLUMNS;
    type Key<'b> = (&'static str, i64);
    fn rows(b: &Batch) -> &[Self] {
        &b.rejects
    }
    fn key<'b>(&'b self, _: &'b Batch, _: Tag) -> Self::Key<'b> {
        (self.reason, secs(self.time_ms))
    }
    fn prefix(&self, _: &Batch) -> (order::Prefix, bool) {
        KeyBytes::new().text(self.reason.as_bytes(), 24).int(secs(self.time_ms), 8).finish()
    }
    fn key_where(&self, _: &Batch, w: KeyWhere) -> KeyWhere {
        w.text(self.reason.as_bytes()).time(self.time_ms)
    }
    fn text(&self) -> gantry_core::output::Text {
        self.detail
    }
    fn encode(&self, b: &Batch, topics: &TopicNames, tag: Tag, out: &mut Columns) {
        reject_row(b, self, topics, tag, out)
    }
}

impl OutputTable for DuplicateRow {
    const NAME: &'static str = "duplicates";
    const COLUMNS: ColumnList = DUPLICATE_COLUMNS;
    type Key<'b> = (i64, &'b [u8]);
    fn rows(b: &Batch) -> &[Self] {
        &b.duplicates
    }
    fn key<'b>(&'b self, b: &'b Batch, _: Tag) -> Self::Key<'b> {
        (secs(self.time_ms), b.text_bytes(self.id))
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        KeyBytes::new().int(secs(self.time_ms), 8).text(b.text_bytes(self.id), 24).finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.time(self.time_ms).text(b.text_bytes(self.id))
    }
    fn text(&self) -> gantry_core::output::Text {
        self.id
    }
    fn encode(&self, b: &Batch, topics: &TopicNames, tag: Tag, out: &mut Columns) {
        duplicate_row(b, self, topics, tag, out)
    }
}

impl OutputTable for StatusRow {
    const NAME: &'static str = "status_list";
    const COLUMNS: ColumnList = STATUS_COLUMNS;
    type Key<'b> = (&'b [u8], i64);
    fn rows(b: &Batch) -> &[Self] {
        &b.status
    }
    fn key<'b>(&'b self, b: &'b Batch, _: Tag) -> Self::Key<'b> {
        (b.text_bytes(self.card_id), secs(self.time_ms))
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        KeyBytes::new().text(b.text_bytes(self.card_id), 24).int(secs(self.time_ms), 8).finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.text(b.text_bytes(self.card_id)).time(self.time_ms)
    }
    fn text(&self) -> gantry_core::output::Text {
        self.card_id
    }
    fn encode(&self, b: &Batch, _: &TopicNames, tag: Tag, out: &mut Columns) {
        status_row(b, self, tag, out)
    }
}

impl OutputTable for ClearingRow {
    const NAME: &'static str = "clearing_daily";
    const COLUMNS: ColumnList = CLEARING_COLUMNS;
    type Key<'b> = (i32, &'b [u8], &'b [u8], u8, u8, u16, u64);
    fn rows(b: &Batch) -> &[Self] {
        &b.clearing
    }
    fn key<'b>(&'b self, b: &'b Batch, tag: Tag) -> Self::Key<'b> {
        let (owner, issuer) = (b.text_bytes(self.owner_id), b.text_bytes(self.issuer_id));
        let (p, seq) = (tag.gantry_partition, tag.batch_seq);
        (self.trade_day, owner, issuer, self.vehicle_type, self.media_type, p, seq)
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        KeyBytes::new()
            .int(self.trade_day as i64, 4)
            .text(b.text_bytes(self.owner_id), 12)
            .text(b.text_bytes(self.issuer_id), 6)
            .int(self.vehicle_type as i64, 2)
            .int(self.media_type as i64, 2)
            // The tag is the rest of the key; it does not fit (this closes the prefix).
            .int(0, 8)
            .finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.date(self.trade_day)
            .text(b.text_bytes(self.owner_id))
            .text(b.text_bytes(self.issuer_id))
            .int(self.vehicle_type as i64)
            .int(self.media_type as i64)
    }
    fn text(&self) -> gantry_core::output::Text {
        self.owner_id
    }
    fn encode(&self, b: &Batch, _: &TopicNames, tag: Tag, out: &mut Columns) {
        clearing_row(b, self, tag, out)
    }
}

impl OutputTable for UsageRow {
    const NAME: &'static str = "customer_usage_daily";
    const COLUMNS: ColumnList = USAGE_COLUMNS;
    type Key<'b> = (&'b [u8], &'b [u8], i32, u16, u64);
    fn rows(b: &Batch) -> &[Self] {
        &b.usage
    }
    fn key<'b>(&'b self, b: &'b Batch, tag: Tag) -> Self::Key<'b> {
        let (p, seq) = (tag.gantry_partition, tag.batch_seq);
        (b.text_bytes(self.customer_id), b.text_bytes(self.card_id), self.day, p, seq)
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        KeyBytes::new()
            .text(b.text_bytes(self.customer_id), 11)
            .text(b.text_bytes(self.card_id), 17)
            .int(self.day as i64, 4)
            .int(0, 8)
            .finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.text(b.text_bytes(self.customer_id)).text(b.text_bytes(self.card_id)).date(self.day)
    }
    fn text(&self) -> gantry_core::output::Text {
        self.customer_id
    }
    fn encode(&self, b: &Batch, _: &TopicNames, tag: Tag, out: &mut Columns) {
        usage_row(b, self, tag, out)
    }
}

impl OutputTable for CardRow {
    const NAME: &'static str = "card_activity";
    const COLUMNS: ColumnList = CARD_COLUMNS;
    type Key<'b> = (&'b [u8], u16, u64);
    fn rows(b: &Batch) -> &[Self] {
        &b.cards
    }
    fn key<'b>(&'b self, b: &'b Batch, tag: Tag) -> Self::Key<'b> {
        (b.text_bytes(self.card_id), tag.gantry_partition, tag.batch_seq)
    }
    fn prefix(&self, b: &Batch) -> (order::Prefix, bool) {
        // The tag is the rest of the key; it does not fit (this closes the prefix, so rows of
        // one card from several batches of a group are ordered by the full key).
        KeyBytes::new().text(b.text_bytes(self.card_id), 25).int(0, 8).finish()
    }
    fn key_where(&self, b: &Batch, w: KeyWhere) -> KeyWhere {
        w.text(b.text_bytes(self.card_id))
    }
    fn text(&self) -> gantry_core::output::Text {
        self.card_id
    }
    fn encode(&self, b: &Batch, topics: &TopicNames, tag: Tag, out: &mut Columns) {
        card_row(b, self, topics.plates.as_deref(), tag, out)
    }
}

/// Encodes every non-empty table of a batch (a pure function: the benchmarks call it too).
pub fn encode_batch(
    batch: &Batch,
    partition: u16,
    seq: u64,
    topics: &TopicNames,
) -> Vec<EncodedTable> {
    encode_batches(&[BatchToWrite { partition, seq, batch }], topics, |_, _| true)
}

/// Encodes the rows of several batches, one [`EncodedTable`] per non-empty table, skipping
/// table `t` of batch `i` unless `include(t, i)`. Rows are in each table's `ORDER BY` order
/// ([`SORT_KEYS`]) across all the batches: ClickHouse sorts an inserted block anyway, and
/// handed a sorted one it skips the shuffle (much cheaper inserts on 18.16; the figures are
/// in `bench/PERFORMANCE.md`).
pub fn encode_batches(
    batches: &[BatchToWrite<'_>],
    topics: &TopicNames,
    include: impl Fn(&'static str, usize) -> bool,
) -> Vec<EncodedTable> {
    // A row is (batch index, row index); its text lives in its own batch's arena.
    let mut refs: Vec<(u32, u32)> = Vec::new();
    let mut tables = Vec::new();
    let mut add = |t: Option<EncodedTable>| tables.extend(t);
    add(encode_table::<Settlement>(batches, topics, &include, &mut refs));
    add(encode_table::<SplitRow>(batches, topics, &include, &mut refs));
    add(encode_table::<LedgerRow>(batches, topics, &include, &mut refs));
    add(encode_table::<RejectRow>(batches, topics, &include, &mut refs));
    add(encode_table::<DuplicateRow>(batches, topics, &include, &mut refs));
    add(encode_table::<StatusRow>(batches, topics, &include, &mut refs));
    add(encode_table::<ClearingRow>(batches, topics, &include, &mut refs));
    add(encode_table::<UsageRow>(batches, topics, &include, &mut refs));
    add(encode_table::<CardRow>(batches, topics, &include, &mut refs));
    tables
}

/// One table's rows of every included batch as one Native block, in `ORDER BY` order
/// (`None` if there are none). `refs` is scratch space, reused across tables.
fn encode_table<T: OutputTable>(
    batches: &[BatchToWrite<'_>],
    topics: &TopicNames,
    include: &impl Fn(&'static str, usize) -> bool,
    refs: &mut Vec<(u32, u32)>,
) -> Option<EncodedTable> {
    refs.clear();
    for (j, b) in batches.iter().enumerate() {
        if include(T::NAME, j) {
            refs.extend((0..T::rows(b.batch).len() as u32).map(|i| (j as u32, i)));
        }
    }
    if refs.is_empty() {
        return None;
    }
    let row = |k: usize| {
        let (j, i) = refs[k];
        let b = &batches[j as usize];
        let tag = Tag { gantry_partition: b.partition, batch_seq: b.seq };
        (b.batch, &T::rows(b.batch)[i as usize], tag)
    };
    let order = insert_order(
        refs.len(),
        |k| {
            let (b, r, _) = row(k);
            r.prefix(b)
        },
        |a, c| {
            let ((ba, ra, ta), (bc, rc, tc)) = (row(a), row(c));
            ra.key(ba, ta).cmp(&rc.key(bc, tc))
        },
    );
    let mut columns = Columns::new(T::COLUMNS, refs.len());
    for (n, &k) in order.iter().enumerate() {
        if let Some(&ahead) = order.get(n + PREFETCH_ROWS_AHEAD) {
            prefetch(row(ahead as usize).1);
        }
        if let Some(&ahead) = order.get(n + PREFETCH_TEXT_AHEAD) {
            let (b, r, _) = row(ahead as usize);
            prefetch(b.text_bytes(r.text()));
        }
        let (b, r, tag) = row(k as usize);
        r.encode(b, topics, tag, &mut columns);
    }
    Some(EncodedTable {
        name: T::NAME,
        columns: T::COLUMNS,
        rows: refs.len(),
        pieces: columns.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::accounts::ListReason;
    use gantry_core::output::{EntryKind, Source, Text, Topic};

    /// A small batch touching every table and every kind of value: a plate in UTF-8, a lane
    /// fee present and absent, two batches' tags, an empty text, a raw reject.
    fn golden_batches() -> (Batch, Batch) {
        let src = |topic, offset| Source {
            topic,
            partition: 2,
            offset,
            timestamp_ms: Some(1_794_000_000_000),
        };
        let mut a = Batch::new();
        for (i, (trade, plate, lane_fee, fee)) in
            [("G0001-B", "苏A12345_0", Some(589), 589), ("G0001-A", "", None, 1178)]
                .into_iter()
                .enumerate()
        {
            let s = Settlement {
                trade_id: a.push_text(trade),
                trans_time_ms: 1_794_000_000_000 + i as i64 * 1000,
                trade_day: 20_764,
                gantry_id: a.push_text("G0001"),
                toll_interval_id: a.push_text("G0015320030010"),
                card_id: a.push_text("32010000000000000042"),
                obu_id: a.push_text("OBU7"),
                vehicle_plate: a.push_text(plate),
                pass_id: a.push_text("P1"),
                customer_id: a.push_text("CU42"),
                issuer_id: a.push_text("3201"),
                media_type: 1,
                card_type: 22,
                vehicle_type: 1,
                vehicle_class: 0,
                axle_count: 2,
                pay_fee: fee + 31,
                discount_fee: 31,
                fee,
                lane_fee,
                tariff_version: a.push_text("32-20261101-001"),
                balance_after: 10_000 - fee,
                flags: 1,
                source: src(Topic::LaneTx, 10 + i as i64),
            };
            let owner_id = a.push_text("OP1");
            a.splits.push(SplitRow {
                trade_id: s.trade_id,
                trade_day: s.trade_day,
                trans_time_ms: s.trans_time_ms,
                interval_id: s.toll_interval_id,
                owner_id,
                issuer_id: s.issuer_id,
                vehicle_type: 1,
                media_type: 1,
                pay_fee: s.pay_fee,
                discount_fee: 31,
                fee,
            });
            a.ledger.push(LedgerRow {
                card_id: s.card_id,
                customer_id: s.customer_id,
                entry_id: s.trade_id,
                kind: EntryKind::Debit,
                amount: -fee,
                balance_after: s.balance_after,
                time_ms: s.trans_time_ms,
                entry_day: s.trade_day,
                source: s.source,
                batch_row: a.ledger.len() as u32,
                trip: Some(a.settlements.len() as u32),
            });
            a.settlements.push(s);
        }
        let raw = a.push_raw(b"{\"tradeId\":");
        a.rejects.push(RejectRow {
            source: src(Topic::LaneTx, 12),
            reason: "not_json",
            detail: Text::EMPTY,
            raw,
            time_ms: 1_794_000_000_000,
        });
        let mut b = Batch::new();
        let dup = b.push_text("G0001-A");
        b.duplicates.push(DuplicateRow {
            id: dup,
            kind: "trade",
            source: src(Topic::LaneTx, 13),
            time_ms: 1_794_000_001_000,
        });
        let card = b.push_text("32010000000000000042");
        let topup = b.push_text("TU1");
        let customer = b.push_text("CU42");
        b.ledger.push(LedgerRow {
            card_id: card,
            customer_id: customer,
            entry_id: topup,
            kind: EntryKind::Topup,
            amount: 5000,
            balance_after: 13_233,
            time_ms: 1_794_000_002_000,
            entry_day: 20_764,
            source: src(Topic::AccountEvents, 3),
            batch_row: 0,
            trip: None,
        });
        b.status.push(StatusRow {
            card_id: card,
            listed: true,
            reason: ListReason::InsufficientBalance,
            time_ms: 1_794_000_002_000,
            source: src(Topic::AccountEvents, 3),
        });
        // A card opened in batch `a`.
        let (card, customer, open) =
            (a.push_text("32010000000000000043"), a.push_text("CU43"), a.push_text("OPEN-43"));
        a.ledger.push(LedgerRow {
            card_id: card,
            customer_id: customer,
            entry_id: open,
            kind: EntryKind::Open,
            amount: 10_000,
            balance_after: 10_000,
            time_ms: 1_794_000_003_000,
            entry_day: 20_764,
            source: src(Topic::AccountEvents, 4),
            batch_row: a.ledger.len() as u32,
            trip: None,
        });
        a.roll_up();
        b.roll_up();
        (a, b)
    }

    /// A row's key as SQL names every column of its table's key in order, with the values
    /// the encoder writes (`KeyWhere::finish` checks each column got one), and quotes text.
    #[test]
    fn key_where_names_the_whole_key() {
        fn all<T: OutputTable>(b: &Batch) -> Vec<String> {
            T::rows(b).iter().map(|r| r.key_where(b, KeyWhere::new(T::NAME)).finish()).collect()
        }
        let (a, b) = golden_batches();
        for batch in [&a, &b] {
            let n = all::<Settlement>(batch).len()
                + all::<SplitRow>(batch).len()
                + all::<LedgerRow>(batch).len()
                + all::<RejectRow>(batch).len()
                + all::<DuplicateRow>(batch).len()
                + all::<StatusRow>(batch).len()
                + all::<ClearingRow>(batch).len()
                + all::<UsageRow>(batch).len()
                + all::<CardRow>(batch).len();
            assert!(n > 0);
        }
        assert_eq!(
            all::<LedgerRow>(&b),
            ["customer_id = 'CU42' AND card_id = '32010000000000000042' AND time = toDateTime(1794000002)"]
        );
        assert_eq!(
            all::<UsageRow>(&b)[0],
            "customer_id = 'CU42' AND card_id = '32010000000000000042' AND day = toDate(20764)"
        );
        assert_eq!(sql_string(r"it's a \ path"), r"'it\'s a \\ path'");
    }

    /// The declared sort keys are the schema's `ORDER BY`, table by table.
    #[test]
    fn sort_keys_are_the_schemas_order_by() {
        for (table, key) in SORT_KEYS {
            assert_eq!(schema::order_by(table).expect("table with a key"), key, "{table}");
        }
        let tables: Vec<&str> = OUTPUT_TABLES.iter().map(|(t, _)| *t).collect();
        let keyed: Vec<&str> = SORT_KEYS.iter().map(|(t, _)| *t).collect();
        assert_eq!(tables, keyed);
    }

    /// A value of a decoded Native column, ordered as ClickHouse orders the column's type.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Value {
        Int(i128),
        Bytes(Vec<u8>),
    }

    /// Decodes one Native block (as `rows.rs` writes it) into named columns.
    fn decode_native(b: &[u8]) -> Vec<(String, Vec<Value>)> {
        fn leb(b: &[u8], at: &mut usize) -> usize {
            let (mut n, mut shift) = (0usize, 0);
            loop {
                let x = b[*at];
                *at += 1;
                n |= ((x & 0x7f) as usize) << shift;
                if x < 0x80 {
                    return n;
                }
                shift += 7;
            }
        }
        fn text(b: &[u8], at: &mut usize) -> Vec<u8> {
            let n = leb(b, at);
            *at += n;
            b[*at - n..*at].to_vec()
        }
        fn int(b: &[u8], at: &mut usize, width: usize, signed: bool) -> i128 {
            let mut x = [0u8; 16];
            x[..width].copy_from_slice(&b[*at..*at + width]);
            *at += width;
            let v = i128::from_le_bytes(x);
            let bits = 8 * width as u32;
            if signed && v >> (bits - 1) & 1 == 1 {
                v - (1i128 << bits)
            } else {
                v
            }
        }
        let mut at = 0;
        let (columns, rows) = (leb(b, &mut at), leb(b, &mut at));
        (0..columns)
            .map(|_| {
                let name = String::from_utf8(text(b, &mut at)).unwrap();
                let ty = String::from_utf8(text(b, &mut at)).unwrap();
                let nulls = ty.starts_with("Nullable(");
                if nulls {
                    at += rows;
                }
                let values = (0..rows)
                    .map(|_| match ty.trim_start_matches("Nullable(").trim_end_matches(')') {
                        "String" => Value::Bytes(text(b, &mut at)),
                        "UInt8" => Value::Int(int(b, &mut at, 1, false)),
                        "UInt16" | "Date" => Value::Int(int(b, &mut at, 2, false)),
                        "UInt32" | "DateTime" => Value::Int(int(b, &mut at, 4, false)),
                        "Int32" => Value::Int(int(b, &mut at, 4, true)),
                        "UInt64" => Value::Int(int(b, &mut at, 8, false)),
                        "Int64" => Value::Int(int(b, &mut at, 8, true)),
                        other => panic!("type {other}"),
                    })
                    .collect();
                (name, values)
            })
            .collect()
    }

    /// Every encoded block is in its table's `ORDER BY` order, read back from the bytes: a
    /// key function that compared another column, or the right ones in another order, fails
    /// here. Many rows of generated traffic, in two batches of one group.
    #[test]
    fn encoded_blocks_are_in_each_tables_order_by_order() {
        let (a, b) = generated_batches();
        let topics = TopicNames { lane_tx: "l".into(), account_events: "a".into(), plates: None };
        let batches = [
            BatchToWrite { partition: 1, seq: 3, batch: &a },
            BatchToWrite { partition: 0, seq: 9, batch: &b },
        ];
        let tables = encode_batches(&batches, &topics, |_, _| true);
        assert_eq!(tables.len(), SORT_KEYS.len(), "every table has rows");
        for t in tables {
            let columns = decode_native(&t.pieces.concat());
            let key = SORT_KEYS.iter().find(|(n, _)| *n == t.name).expect("keyed").1;
            let key_columns: Vec<&Vec<Value>> = key
                .iter()
                .map(|k| &columns.iter().find(|(n, _)| n == k).expect("key column").1)
                .collect();
            let row_key = |i: usize| key_columns.iter().map(|c| c[i].clone()).collect::<Vec<_>>();
            assert!(t.rows >= 20, "{}: {} rows", t.name, t.rows);
            for i in 1..t.rows {
                assert!(
                    row_key(i - 1) <= row_key(i),
                    "{}: row {i} out of ORDER BY order: {:?} then {:?}",
                    t.name,
                    row_key(i - 1),
                    row_key(i)
                );
            }
        }
    }

    /// Two batches of generated traffic with rows in every table.
    fn generated_batches() -> (Batch, Batch) {
        use gantry_core::{Engine, EngineConfig};
        let net = gantry_gen::Network::new(5, 200, 6);
        let set =
            gantry_core::tariff::TariffSet::default().with(net.tariff_version().unwrap()).unwrap();
        let cfg = gantry_gen::TrafficConfig {
            records: 6_000,
            cards: 300,
            bad_rate: 0.02,
            duplicate_rate: 0.05,
            ..gantry_gen::TrafficConfig::default()
        };
        let mut traffic = gantry_gen::Traffic::new(cfg, &net);
        let mut engine = Engine::new(EngineConfig {
            max_future_skew_ms: i64::MAX / 4,
            ..EngineConfig::default()
        });
        let (mut a, mut b) = (Batch::new(), Batch::new());
        let mut n = 0i64;
        while let Some(m) = traffic.next_message() {
            n += 1;
            let out = if n % 2 == 0 { &mut a } else { &mut b };
            let topic = match m.topic {
                gantry_gen::Topic::LaneTx => Topic::LaneTx,
                gantry_gen::Topic::AccountEvents => Topic::AccountEvents,
            };
            let src = Source { topic, partition: 0, offset: n, timestamp_ms: Some(m.timestamp_ms) };
            match topic {
                Topic::LaneTx => engine.lane_message(&set, m.value, src, out),
                Topic::AccountEvents => engine.account_message(m.value, src, out),
            }
        }
        a.roll_up();
        b.roll_up();
        (a, b)
    }

    /// The encoder still writes the committed golden blocks (`tests/native/`), which
    /// `tests/tests/native.rs` (18.16) and `tests/sql_compat.py` (current ClickHouse) read
    /// back value by value. `GANTRY_BLESS_NATIVE=1` rewrites the blocks after a deliberate
    /// change of the encoding (then check the `.tsv` rows still hold).
    #[test]
    fn encoder_writes_the_golden_native_blocks() {
        let (a, b) = golden_batches();
        let topics = TopicNames {
            lane_tx: "gantry.lane-tx".into(),
            account_events: "gantry.account-events".into(),
            plates: Some(std::sync::Arc::new(
                gantry_pii::Keyring::from_toml(gantry_pii::TEST_KEYS).unwrap(),
            )),
        };
        let batches = [
            BatchToWrite { partition: 2, seq: 7, batch: &a },
            BatchToWrite { partition: 2, seq: 8, batch: &b },
        ];
        let tables = encode_batches(&batches, &topics, |_, _| true);
        assert_eq!(
            tables.iter().map(|t| t.name).collect::<Vec<_>>(),
            OUTPUT_TABLES.map(|(t, _)| t)
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/native");
        let bless = std::env::var_os("GANTRY_BLESS_NATIVE").is_some();
        for t in tables {
            let body = t.pieces.concat();
            let path = dir.join(format!("{}.native", t.name));
            if bless {
                std::fs::create_dir_all(&dir).expect("mkdir");
                std::fs::write(&path, &body).expect("write golden");
            }
            let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                golden == body,
                "{}: the encoding changed (rerun with GANTRY_BLESS_NATIVE=1 if on purpose)",
                t.name
            );
        }
    }
}
