//! The running engine: one consumer group over the two co-partitioned input topics, one
//! worker per partition owning that partition's [`Engine`], batches written to ClickHouse
//! exactly once (see ARCHITECTURE.md, "The pipeline and exactly once").
//!
//! Threads: the caller's thread polls Kafka and routes message chunks into each worker's
//! bounded channel (a full channel blocks polling: backpressure); workers are tokio tasks on
//! a small runtime and do the CPU work and the ClickHouse and status-list I/O of their own
//! partition only. Offsets are committed to the group by the polling thread, on a worker's
//! request, after that worker's batch is committed in ClickHouse.

#![forbid(unsafe_code)]

pub mod instance;
pub mod io;
mod land;
mod merge;
pub mod mutation;
mod poller;
mod tariffs;
mod worker;

use std::sync::Arc;

use gantry_clickhouse::TopicNames;
use gantry_core::{EngineConfig, TariffStore};
use serde::Deserialize;

pub use poller::{run, RunSummary};
pub use worker::{Chunk, CommitRequest};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Kafka(#[from] gantry_kafka::KafkaIoError),
    #[error(transparent)]
    RdKafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] gantry_clickhouse::StoreError),
    #[error("state of partition {partition}: {source}")]
    State { partition: i32, source: gantry_core::codec::StateError },
    #[error("replay of batch {seq} of partition {partition} did not reproduce it ({detail}): refusing to continue")]
    ReplayMismatch { partition: i32, seq: u64, detail: String },
    #[error("worker of partition {0} failed: {1}")]
    Worker(i32, String),
    /// Another instance has taken these partitions (a higher epoch in `gantry_owners`):
    /// this one must not write for them any more.
    #[error("partitions {0:?} were taken over by another instance: not writing for them")]
    Fenced(Vec<i32>),
    /// Another instance took the same epoch of the partition at the same moment and won.
    #[error("partition {0} was taken by another instance at the same epoch")]
    LostTakeover(i32),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A tariff version's files differ from what was stored under its name when it was
    /// first used (published versions are immutable: publish changes as a new version).
    #[error("tariff version {0} was changed after it was used; publish changes as a new version")]
    TariffChanged(String),
    /// A journaled batch names a tariff set ClickHouse does not hold (the protocol stores a
    /// set before journaling a batch priced with it, so the tables were tampered with).
    #[error("tariff set {0}, which a journaled batch was priced with, is not stored")]
    TariffSetMissing(u64),
    #[error("stored tariff set {0} does not rebuild: {1}")]
    TariffStored(u64, String),
    #[error("tariff directory: {0}")]
    Tariff(String),
}

impl PipelineError {
    /// Whether waiting may cure it: an unreachable or failing ClickHouse or broker. A journal
    /// that does not replay, a checkpoint that does not decode, or a failed worker does not
    /// get better by trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Kafka(e) => {
                !matches!(e, gantry_kafka::KafkaIoError::NotCopartitioned { .. })
            }
            PipelineError::RdKafka(_) | PipelineError::Store(_) => true,
            PipelineError::LostTakeover(_) => true,
            PipelineError::Fenced(_) => false,
            PipelineError::State { .. }
            | PipelineError::TariffChanged(_)
            | PipelineError::TariffSetMissing(_)
            | PipelineError::TariffStored(..)
            | PipelineError::Tariff(_)
            | PipelineError::ReplayMismatch { .. }
            | PipelineError::Worker(..)
            | PipelineError::Runtime(_) => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, PipelineError>;

/// Everything `gantry run` needs. Limits carry their unit in the name.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub brokers: String,
    pub group_id: String,
    pub lane_topic: String,
    pub account_topic: String,
    pub status_topic: String,
    pub clickhouse_url: String,
    pub database: String,
    /// `lz4` (default) or `none`: compress INSERT bodies only when ClickHouse is across a
    /// network; on the same host compression costs CPU on both sides and saves nothing.
    pub insert_compression: gantry_clickhouse::InsertCompression,
    /// A batch closes at this many output rows: large INSERTs are what ClickHouse likes,
    /// and far below the 1,048,576-row block that would split an INSERT in two parts.
    pub batch_rows_max: usize,
    /// ... or this many bytes of text in its arenas (bounds a worker's memory).
    pub batch_bytes_max: usize,
    /// ... or when its first message is this old: the latency bound from lane to ClickHouse.
    pub flush_interval_ms: u64,
    /// How long a record waits for the other topic's partition (not at its end, but nothing
    /// arriving) before it is merged anyway. Long enough to ride out a busy poller on a
    /// loaded machine; an idle partition is recognised at once by its end-of-partition event.
    pub merge_idle_ms: u64,
    /// Engine state is checkpointed to ClickHouse every this many batches: replay after a
    /// crash covers at most this many batches.
    pub checkpoint_every_batches: u64,
    /// Message chunks buffered per worker before polling blocks (each chunk ≤ `chunk_messages_max`).
    pub channel_chunks_max: usize,
    /// Messages per chunk handed from the poller to a worker.
    pub chunk_messages_max: usize,
    /// Bytes of input one worker may hold at once — in its channel and in its merge
    /// buffers — before the poller waits to hand it more: the bound on a partition's input
    /// memory, whatever its messages' size and however long ClickHouse stalls it (one
    /// message larger than this still passes, alone). 256 MiB is seconds of a partition's
    /// input at full rate; an instance's input memory is this per partition it owns, plus
    /// librdkafka's queue (`queued.max.messages.kbytes`, 64 MiB).
    pub worker_buffer_bytes_max: usize,
    /// Stop once every assigned partition is at its end and nothing arrived for this long
    /// (the demo and tests); `0` runs until stopped.
    pub exit_when_idle_ms: u64,
    /// Network time zone, minutes east of UTC.
    pub network_utc_offset_min: i32,
    pub dedup_window_ms: i64,
    /// Trade ids per partition the dedup table is sized for at start: about a partition's
    /// lane records per `dedup_window_ms` (20–30 bytes each). Avoids the pauses of growing a
    /// table of millions of ids by half, again and again, mid-stream; 0 grows as needed.
    pub dedup_expected_ids: usize,
    pub min_balance_fen: i64,
    pub max_future_skew_ms: i64,
    /// Name of this instance in the batch journal.
    pub instance: String,
    /// After SIGTERM (or SIGINT), how long Gantry may take to land what it holds, checkpoint
    /// and leave the group before it exits anyway; a second signal exits at once. What is not
    /// landed then is re-read on restart, exactly as after a crash. 25 s: inside Kubernetes'
    /// default 30 s grace period, so Gantry's own exit, with its log line, comes first.
    pub stop_timeout_ms: u64,
    /// How long a new owner of a partition taken from another instance waits after it
    /// records its epoch, before it kills what is still running for the partition and reads
    /// the journal: longer than an old owner can take between its last ownership check and
    /// the write that check guards (it checks right before each write, so milliseconds,
    /// unless the process is paused in exactly that gap — the timing assumption; see
    /// ARCHITECTURE.md, "Fencing").
    pub fence_grace_ms: u64,
    /// Kafka group session timeout: after a crash, the dead instance's partitions sit idle
    /// this long before another member gets them. 10 s fails over quickly while riding out
    /// a pause of a few seconds (a long ClickHouse stall does not stop heartbeats, which
    /// librdkafka sends from its own thread).
    pub session_timeout_ms: u64,
    /// Kafka static membership (`group.instance.id`): a name that stays the same across
    /// restarts of this instance (its StatefulSet pod name, say) and is unique in the group.
    /// A restarted instance then takes its own partitions straight back, without a
    /// rebalance and without waiting for its dead predecessor's session to time out; a
    /// member that died mid-join cannot linger either. Unset: dynamic membership. For Apache
    /// Kafka and Redpanda; Tansu 0.6 assigns and revokes a static member's partitions every
    /// session timeout, endlessly (seen here), so leave it unset there.
    pub group_instance_id: Option<String>,
    /// The PII key file (contract §5.2; format in `gantry_pii`): plates are written sealed
    /// with its current key. Without one, plates are not stored at all.
    pub pii_keys_file: Option<std::path::PathBuf>,
    /// The key ring loaded from `pii_keys_file` (by the binary, before the run starts).
    #[serde(skip)]
    pub plate_keys: Option<std::sync::Arc<gantry_pii::Keyring>>,
    /// The tariff root (one directory per version); `gantry run --tariff` sets it. Watched
    /// while running: versions renamed into it (or removed) are loaded without a pause.
    pub tariff_dir: Option<std::path::PathBuf>,
    /// How often the tariff root is scanned for versions added or removed. 2 s: a new
    /// version is published well ahead of its `effective_from`, so this only bounds how soon
    /// an operator sees it loaded (in the log); a scan reads two small files per version.
    /// 0: never rescanned.
    pub tariff_scan_interval_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        PipelineConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "gantry".into(),
            lane_topic: "gantry.lane-tx".into(),
            account_topic: "gantry.account-events".into(),
            status_topic: "gantry.status-list".into(),
            clickhouse_url: "http://127.0.0.1:8123".into(),
            database: "gantry".into(),
            insert_compression: gantry_clickhouse::InsertCompression::Lz4,
            batch_rows_max: 200_000,
            batch_bytes_max: 64 << 20,
            flush_interval_ms: 1_000,
            merge_idle_ms: 2_000,
            checkpoint_every_batches: 20,
            channel_chunks_max: 16,
            chunk_messages_max: 4_096,
            worker_buffer_bytes_max: 256 << 20,
            exit_when_idle_ms: 0,
            network_utc_offset_min: e.parse.network_utc_offset_min,
            dedup_window_ms: e.dedup_window_ms,
            dedup_expected_ids: e.dedup_expected_ids,
            min_balance_fen: e.min_balance_fen,
            max_future_skew_ms: e.max_future_skew_ms,
            instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "gantry".into()),
            session_timeout_ms: 10_000,
            stop_timeout_ms: 25_000,
            fence_grace_ms: 2_000,
            group_instance_id: None,
            pii_keys_file: None,
            plate_keys: None,
            tariff_dir: None,
            tariff_scan_interval_ms: 2_000,
        }
    }
}

/// The shortest dedup window accepted: the window's minute resolution (`dedup.rs`) makes
/// anything shorter meaningless.
const DEDUP_WINDOW_MIN_MS: i64 = 60_000;
/// Time zones on Earth are within ±14 h of UTC.
const UTC_OFFSET_MAX_MIN: i32 = 14 * 60;
/// Session timeouts Kafka brokers accept by default (`group.min.session.timeout.ms` 6 s,
/// `group.max.session.timeout.ms` 30 min), widened below to 1 s for test brokers.
const SESSION_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_800_000;
use gantry_clickhouse::GROUP_ROWS_MAX;

impl PipelineConfig {
    /// Checks every value before anything starts.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut errs = Vec::new();
        if self.lane_topic == self.account_topic {
            errs.push("lane_topic and account_topic must differ".to_string());
        }
        if self.batch_rows_max == 0 || self.batch_rows_max > GROUP_ROWS_MAX {
            errs.push(format!(
                "batch_rows_max {} must be in 1..={GROUP_ROWS_MAX} (one INSERT block)",
                self.batch_rows_max
            ));
        }
        if self.flush_interval_ms == 0 {
            errs.push("flush_interval_ms must be > 0".into());
        }
        if self.checkpoint_every_batches == 0 {
            errs.push("checkpoint_every_batches must be > 0".into());
        }
        if self.worker_buffer_bytes_max == 0 {
            errs.push("worker_buffer_bytes_max must be > 0".into());
        }
        if self.channel_chunks_max == 0 || self.chunk_messages_max == 0 {
            errs.push("channel_chunks_max and chunk_messages_max must be > 0".into());
        }
        if self.dedup_window_ms < DEDUP_WINDOW_MIN_MS {
            errs.push("dedup_window_ms must be at least a minute".into());
        }
        if !(-UTC_OFFSET_MAX_MIN..=UTC_OFFSET_MAX_MIN).contains(&self.network_utc_offset_min) {
            errs.push("network_utc_offset_min must be within ±14 h".into());
        }
        if !SESSION_TIMEOUT_MS_RANGE.contains(&self.session_timeout_ms) {
            errs.push(format!(
                "session_timeout_ms {} must be in {SESSION_TIMEOUT_MS_RANGE:?}",
                self.session_timeout_ms
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            parse: gantry_core::parse::ParseConfig {
                network_utc_offset_min: self.network_utc_offset_min,
            },
            dedup_window_ms: self.dedup_window_ms,
            min_balance_fen: self.min_balance_fen,
            max_future_skew_ms: self.max_future_skew_ms,
            dedup_expected_ids: self.dedup_expected_ids,
        }
    }

    pub fn topics(&self) -> TopicNames {
        TopicNames {
            lane_tx: self.lane_topic.clone(),
            account_events: self.account_topic.clone(),
            plates: self.plate_keys.clone(),
        }
    }
}

/// Gantry's own clock, ms since 1970: what a batch's records are checked against for being
/// dated in the future (the only wall-clock reading that decides anything; it is journaled
/// with the batch, so a replay reads it back instead).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Message chunks' buffers, handed back by workers for the poller to fill again. Without it
/// every chunk was fresh memory from the kernel (allocated on the polling thread, freed on a
/// worker thread), and zeroing those pages cost more CPU than parsing the messages.
pub(crate) struct ChunkPool {
    free: std::sync::Mutex<Vec<worker::Chunk>>,
}

/// Buffers kept for reuse: enough for every worker's full channel on a typical host; beyond
/// that a returned buffer is freed.
const CHUNK_POOL_MAX: usize = 64;
/// A returned chunk that grew past this (a few very large messages) is freed, not kept: the
/// pool would otherwise hold up to `CHUNK_POOL_MAX` such buffers for good, outside every
/// worker's `worker_buffer_bytes_max`.
const CHUNK_BYTES_POOLED_MAX: usize = 4 << 20;
/// A new chunk's payload room (256 KiB: a few hundred lane messages before it grows; reused
/// chunks keep what they grew to).
const CHUNK_BYTES_RESERVED: usize = 256 << 10;
/// A new chunk's message-index room.
const CHUNK_MESSAGES_RESERVED: usize = 1024;

impl ChunkPool {
    pub(crate) fn new() -> ChunkPool {
        ChunkPool { free: std::sync::Mutex::new(Vec::new()) }
    }

    /// An empty chunk for `topic`, reusing a returned buffer when there is one.
    pub(crate) fn take(&self, topic: gantry_core::output::Topic) -> worker::Chunk {
        match self.free.lock().expect("chunk pool lock").pop() {
            Some(mut c) => {
                c.topic = topic;
                c
            }
            None => worker::Chunk {
                topic,
                data: Vec::with_capacity(CHUNK_BYTES_RESERVED),
                msgs: Vec::with_capacity(CHUNK_MESSAGES_RESERVED),
                at_end: false,
                charged: None,
            },
        }
    }

    /// Takes a chunk back once its worker is done with it (or it was never handed on): its
    /// bytes are released from the worker's budget, its buffers kept for reuse.
    pub(crate) fn give_back(&self, mut c: worker::Chunk) {
        if let Some((budget, bytes)) = c.charged.take() {
            budget.release(bytes);
        }
        if c.data.capacity() > CHUNK_BYTES_POOLED_MAX {
            return;
        }
        c.data.clear();
        c.msgs.clear();
        c.at_end = false;
        let mut free = self.free.lock().expect("chunk pool lock");
        if free.len() < CHUNK_POOL_MAX {
            free.push(c);
        }
    }
}

/// The bytes of input a worker holds (`worker_buffer_bytes_max`): the poller acquires a
/// chunk's payload before handing it on, the worker releases it when it gives the chunk
/// back. Kept apart from the channel's bound in chunks, because a chunk may be 32 MiB.
pub(crate) struct ByteBudget {
    max: usize,
    used: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// How often a poller waiting on a worker's budget checks that the worker still wants the
/// chunk (it may have been revoked or stopped meanwhile, and will release nothing more).
const BUDGET_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl ByteBudget {
    pub(crate) fn new(max: usize) -> ByteBudget {
        ByteBudget { max, used: std::sync::Mutex::new(0), freed: std::sync::Condvar::new() }
    }

    /// Takes `bytes`, waiting while that would exceed the budget — unless nothing is held,
    /// so one chunk larger than the budget still passes alone. `false` (nothing taken) as
    /// soon as `wanted()` says the worker is gone.
    pub(crate) fn acquire(&self, bytes: usize, wanted: impl Fn() -> bool) -> bool {
        let mut used = self.used.lock().expect("budget lock");
        while *used > 0 && *used + bytes > self.max {
            if !wanted() {
                return false;
            }
            used = self.freed.wait_timeout(used, BUDGET_RECHECK).expect("budget lock").0;
        }
        *used += bytes;
        true
    }

    pub(crate) fn release(&self, bytes: usize) {
        let mut used = self.used.lock().expect("budget lock");
        debug_assert!(*used >= bytes, "released more than was taken");
        *used = used.saturating_sub(bytes);
        self.freed.notify_all();
    }
}

/// What every worker of an instance shares (read-only).
pub(crate) struct Shared<I: io::Io> {
    pub cfg: PipelineConfig,
    pub tariffs: Arc<TariffStore>,
    /// The store, the broker's range reads, the status list and the clock.
    pub io: I,
    pub topics: TopicNames,
    /// Kafka timestamp → landed in ClickHouse, per settled record, in ms (merged per batch).
    pub latency_ms: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    pub chunk_pool: ChunkPool,
    /// Where workers hand closed batches (see `land.rs`: group commit).
    pub lander: tokio::sync::mpsc::Sender<land::LandingJob>,
    /// Tariff sets this process has made durable (`tariffs::ensure_stored`).
    pub stored_sets: std::sync::Mutex<std::collections::HashSet<u64>>,
}

#[cfg(test)]
mod budget_tests {
    use super::ByteBudget;

    /// Bytes are taken up to the budget and wait beyond it; a chunk larger than the whole
    /// budget passes when nothing else is held; a worker gone stops the wait.
    #[test]
    fn a_budget_bounds_what_is_held() {
        let b = std::sync::Arc::new(ByteBudget::new(100));
        assert!(b.acquire(60, || true));
        assert!(b.acquire(40, || true), "exactly the budget");
        assert!(!b.acquire(1, || false), "over the budget, the worker gone: nothing taken");
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || b.acquire(50, || true))
        };
        b.release(60);
        assert!(waiter.join().unwrap(), "released bytes let the waiter in");
        b.release(40);
        b.release(50);
        assert!(b.acquire(500, || true), "alone, a chunk larger than the budget passes");
    }
}
