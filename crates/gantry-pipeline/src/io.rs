//! The pipeline's edges: the store (ClickHouse), range reads of the input log (Kafka), the
//! status-list topic and the wall clock, as small traits.
//!
//! Everything the workers and the lander decide — merge, batching, landing and group
//! commit, the journal, checkpoints, recovery, fencing, late records — is written against
//! these traits, so the same code runs in production ([`Live`]: the ClickHouse client and
//! `rdkafka`, as before the seam existed) and in the deterministic simulator
//! (`crates/gantry-sim`: everything in memory, every fault injectable, time virtual). The
//! group consumer itself (`poller.rs`) stays on `rdkafka`: the simulator drives the workers
//! with its own assignment and delivery of chunks (see [`crate::instance`]).
//!
//! Contract of every implementation (what the protocol relies on, and what the simulator
//! holds its store to):
//! * an INSERT of a batch (or group) into one table is all or nothing: `write_batches`
//!   leaves each table with every row of a batch or none, whatever fails;
//! * `write_batches` with `only_missing` writes a table only for the batches it does not
//!   hold; a batch found there in part is an error;
//! * an attempt the client gave up on may still be running; a retry of the same batches
//!   does not run beside it (same query id), and `kill_running_inserts` plus
//!   `running_inserts` == 0 means none is left;
//! * reads see every write that returned `Ok` before they started.
//!
//! Timers are `tokio::time` (the simulator runs on a paused clock); the batch clock — the only
//! wall-clock reading that decides anything — is [`Io::wall_clock_ms`].

use std::collections::HashSet;
use std::future::Future;

use gantry_clickhouse::{
    BatchRecord, BatchToWrite, CheckpointRecord, JournalEntry, Ownership, TariffRecord,
    TariffSetRecord, TopicNames,
};
use gantry_kafka::{KafkaIoError, RangeMessage, Tail};

/// A result of the store.
pub type StoreResult<T> = std::result::Result<T, gantry_clickhouse::StoreError>;
/// A result of the broker.
pub type LogResult<T> = std::result::Result<T, KafkaIoError>;

/// The tables Gantry writes and reads (ClickHouse in production; see the module doc for
/// what every implementation must guarantee).
pub trait Store: Send + Sync + 'static {
    /// Takes partition `p` for `instance` at the next epoch (`None`: another instance took
    /// the same epoch at the same moment and won).
    fn take_ownership(
        &self,
        p: u16,
        instance: &str,
    ) -> impl Future<Output = StoreResult<Option<Ownership>>> + Send;
    /// The current epoch of each partition that has one.
    fn epochs(
        &self,
        partitions: &[u16],
    ) -> impl Future<Output = StoreResult<Vec<(u16, u64)>>> + Send;
    /// Gantry's INSERTs still running for partition `p`.
    fn running_inserts(&self, p: u16) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Stops every INSERT of Gantry's running for partition `p`.
    fn kill_running_inserts(&self, p: u16) -> impl Future<Output = StoreResult<()>> + Send;
    /// The newest checkpoint of partition `p`.
    fn latest_checkpoint(
        &self,
        p: u16,
    ) -> impl Future<Output = StoreResult<Option<CheckpointRecord>>> + Send;
    fn write_checkpoint(
        &self,
        c: &CheckpointRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every journal record of `p` after `seq`, in order, a batch's committed record
    /// winning over its planned one.
    fn batches_after(
        &self,
        p: u16,
        seq: u64,
    ) -> impl Future<Output = StoreResult<Vec<BatchRecord>>> + Send;
    /// One INSERT of a *planned* journal row per batch.
    fn plan_batches(
        &self,
        batches: &[JournalEntry],
        instance: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// One INSERT of a *committed* journal row per batch.
    fn commit_batches(
        &self,
        batches: &[JournalEntry],
        instance: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// One INSERT per output table of every batch's rows (group commit).
    fn write_batches(
        &self,
        batches: &[BatchToWrite<'_>],
        topics: &TopicNames,
        only_missing: OnlyMissing,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Of these `(local day, tradeId)`, the ids partition `p` has settled.
    fn settled_trade_ids(
        &self,
        p: u16,
        ids: &[(i32, &str)],
    ) -> impl Future<Output = StoreResult<HashSet<String>>> + Send;
    fn store_tariff_set(
        &self,
        set: &TariffSetRecord,
        versions: &[TariffRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn tariff_set(
        &self,
        set_id: u64,
    ) -> impl Future<Output = StoreResult<Option<TariffSetRecord>>> + Send;
    fn tariffs_by_hash(
        &self,
        hashes: &[u64],
    ) -> impl Future<Output = StoreResult<Vec<TariffRecord>>> + Send;
    fn tariff_hashes_named(
        &self,
        names: &[String],
    ) -> impl Future<Output = StoreResult<Vec<(String, u64)>>> + Send;
}

/// Whether a landing writes every table (a first attempt) or only those that do not hold
/// its batches yet (a retry, or the completion of a batch journaled as planned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnlyMissing {
    No,
    Yes,
}

/// Reads of exact offset ranges of the input topics (replay, gaps, silent sides).
/// Blocking: production does librdkafka I/O here (inside `block_in_place`).
pub trait Reader: Send + Sync + 'static {
    /// The first offset still retained.
    fn low_watermark(&self, topic: &str, p: i32) -> LogResult<i64>;
    /// Exactly the offsets `[from, to)` that hold a message.
    fn read(
        &self,
        topic: &str,
        p: i32,
        from: i64,
        to: i64,
        f: impl FnMut(RangeMessage<'_>),
    ) -> LogResult<()>;
    /// What the partition holds from `from` on now, at most `max` messages.
    fn read_tail(
        &self,
        topic: &str,
        p: i32,
        from: i64,
        max: usize,
        f: impl FnMut(RangeMessage<'_>),
    ) -> LogResult<Tail>;
}

/// The status-list topic.
pub trait StatusSink: Send + Sync + 'static {
    /// Sends every `(key, value, timestamp ms)` and waits until the broker has each.
    fn send_all(
        &self,
        msgs: &[(String, String, i64)],
    ) -> impl Future<Output = LogResult<()>> + Send;
}

/// One instance's edges.
pub trait Io: Send + Sync + 'static {
    type Store: Store;
    type Reader: Reader;
    type Status: StatusSink;
    fn store(&self) -> &Self::Store;
    fn status(&self) -> &Self::Status;
    /// A reader for one worker.
    fn reader(&self) -> LogResult<Self::Reader>;
    /// ms since 1970: the batch clock (journaled with each batch).
    fn wall_clock_ms(&self) -> i64;
}

/// Production: ClickHouse through its HTTP client, Kafka through `rdkafka`.
pub struct Live {
    pub store: gantry_clickhouse::Store,
    pub status: gantry_kafka::StatusProducer,
    pub brokers: String,
}

impl Io for Live {
    type Store = gantry_clickhouse::Store;
    type Reader = LiveReader;
    type Status = gantry_kafka::StatusProducer;
    fn store(&self) -> &Self::Store {
        &self.store
    }
    fn status(&self) -> &Self::Status {
        &self.status
    }
    fn reader(&self) -> LogResult<LiveReader> {
        blocking(|| gantry_kafka::RangeReader::new(&self.brokers)).map(LiveReader)
    }
    fn wall_clock_ms(&self) -> i64 {
        crate::wall_clock_ms()
    }
}

/// Runs blocking librdkafka I/O from a worker task without stalling the runtime's other
/// tasks (`block_in_place`; outside a runtime it simply runs).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// [`gantry_kafka::RangeReader`], read from worker tasks.
pub struct LiveReader(gantry_kafka::RangeReader);

impl Reader for LiveReader {
    fn low_watermark(&self, topic: &str, p: i32) -> LogResult<i64> {
        blocking(|| self.0.low_watermark(topic, p))
    }
    fn read(
        &self,
        topic: &str,
        p: i32,
        from: i64,
        to: i64,
        f: impl FnMut(RangeMessage<'_>),
    ) -> LogResult<()> {
        blocking(|| self.0.read(topic, p, from, to, f))
    }
    fn read_tail(
        &self,
        topic: &str,
        p: i32,
        from: i64,
        max: usize,
        f: impl FnMut(RangeMessage<'_>),
    ) -> LogResult<Tail> {
        blocking(|| self.0.read_tail(topic, p, from, max, f))
    }
}

impl StatusSink for gantry_kafka::StatusProducer {
    fn send_all(
        &self,
        msgs: &[(String, String, i64)],
    ) -> impl Future<Output = LogResult<()>> + Send {
        gantry_kafka::StatusProducer::send_all(self, msgs)
    }
}

impl Store for gantry_clickhouse::Store {
    fn take_ownership(
        &self,
        p: u16,
        instance: &str,
    ) -> impl Future<Output = StoreResult<Option<Ownership>>> + Send {
        gantry_clickhouse::Store::take_ownership(self, p, instance)
    }
    fn epochs(
        &self,
        partitions: &[u16],
    ) -> impl Future<Output = StoreResult<Vec<(u16, u64)>>> + Send {
        gantry_clickhouse::Store::epochs(self, partitions)
    }
    fn running_inserts(&self, p: u16) -> impl Future<Output = StoreResult<u64>> + Send {
        gantry_clickhouse::Store::running_inserts(self, p)
    }
    fn kill_running_inserts(&self, p: u16) -> impl Future<Output = StoreResult<()>> + Send {
        gantry_clickhouse::Store::kill_running_inserts(self, p)
    }
    fn latest_checkpoint(
        &self,
        p: u16,
    ) -> impl Future<Output = StoreResult<Option<CheckpointRecord>>> + Send {
        gantry_clickhouse::Store::latest_checkpoint(self, p)
    }
    fn write_checkpoint(
        &self,
        c: &CheckpointRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        gantry_clickhouse::Store::write_checkpoint(self, c)
    }
    fn batches_after(
        &self,
        p: u16,
        seq: u64,
    ) -> impl Future<Output = StoreResult<Vec<BatchRecord>>> + Send {
        gantry_clickhouse::Store::batches_after(self, p, seq)
    }
    fn plan_batches(
        &self,
        batches: &[JournalEntry],
        instance: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        gantry_clickhouse::Store::plan_batches(self, batches, instance)
    }
    fn commit_batches(
        &self,
        batches: &[JournalEntry],
        instance: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        gantry_clickhouse::Store::commit_batches(self, batches, instance)
    }
    fn write_batches(
        &self,
        batches: &[BatchToWrite<'_>],
        topics: &TopicNames,
        only_missing: OnlyMissing,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        let only_missing = only_missing == OnlyMissing::Yes;
        gantry_clickhouse::Store::write_batches(self, batches, topics, only_missing)
    }
    fn settled_trade_ids(
        &self,
        p: u16,
        ids: &[(i32, &str)],
    ) -> impl Future<Output = StoreResult<HashSet<String>>> + Send {
        gantry_clickhouse::Store::settled_trade_ids(self, p, ids)
    }
    fn store_tariff_set(
        &self,
        set: &TariffSetRecord,
        versions: &[TariffRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send {
        gantry_clickhouse::Store::store_tariff_set(self, set, versions)
    }
    fn tariff_set(
        &self,
        set_id: u64,
    ) -> impl Future<Output = StoreResult<Option<TariffSetRecord>>> + Send {
        gantry_clickhouse::Store::tariff_set(self, set_id)
    }
    fn tariffs_by_hash(
        &self,
        hashes: &[u64],
    ) -> impl Future<Output = StoreResult<Vec<TariffRecord>>> + Send {
        gantry_clickhouse::Store::tariffs_by_hash(self, hashes)
    }
    fn tariff_hashes_named(
        &self,
        names: &[String],
    ) -> impl Future<Output = StoreResult<Vec<(String, u64)>>> + Send {
        gantry_clickhouse::Store::tariff_hashes_named(self, names)
    }
}
