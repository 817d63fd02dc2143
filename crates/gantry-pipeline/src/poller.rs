//! The polling thread: consumer group membership, routing of message chunks to partition
//! workers, offset commits on the workers' behalf, and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_core::output::Topic;
use gantry_core::TariffStore;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::instance::{Instance, LATENCY_MAX_MS, RECOVERY_RETRY_FIRST, RECOVERY_RETRY_MAX};
use crate::io::Live;
use crate::worker::{Chunk, CommitRequest};
use crate::{PipelineConfig, PipelineError, Result};

/// How long one poll waits: short, so chunks are handed on promptly at low rates.
const POLL_TIMEOUT_MS: u64 = 20;
/// Pending chunks are handed to workers at least this often (latency at low rates).
const CHUNK_FLUSH_MS: u64 = 20;
/// While messages keep arriving, timers, offset commits and worker health are looked at this
/// often (and whenever a poll returns no message): per message they cost more than the
/// message itself (a list allocation, a lock, several clock reads).
const HOUSEKEEPING_INTERVAL_MS: u64 = 5;

/// What a run did, for the demo's closing lines.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Messages polled from both input topics.
    pub messages: u64,
    /// From start to stop (including any idle wait before stopping).
    pub elapsed: Duration,
    /// From start to the last batch landed in ClickHouse.
    pub until_last_landed: Duration,
    /// Kafka message timestamp → batch committed in ClickHouse, per settled record (ms).
    /// Meaningful when producers stamp messages with the wall clock.
    pub latency_ms: hdrhistogram::Histogram<u64>,
}

impl RunSummary {
    fn stopped_before_start() -> RunSummary {
        RunSummary {
            messages: 0,
            elapsed: Duration::ZERO,
            until_last_landed: Duration::ZERO,
            latency_ms: hdrhistogram::Histogram::new_with_bounds(1, LATENCY_MAX_MS, 3)
                .expect("histogram bounds"),
        }
    }
}

struct WorkerHandle {
    /// Its channel, task and recovered flag (until recovered the instance is not drained
    /// and, for operators, not ready).
    w: crate::instance::WorkerHandle,
    /// The partition's fetch was resumed after its recovery (it is paused from assignment
    /// until then: see [`Ctx::resume_recovered`]).
    fetching: bool,
    /// The input bytes the worker holds (`worker_buffer_bytes_max`).
    budget: Arc<crate::ByteBudget>,
}

struct Ctx {
    instance: Instance<Live>,
    rt: tokio::runtime::Handle,
    workers: Mutex<HashMap<i32, WorkerHandle>>,
    failed: AtomicBool,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        // End-of-partition is an event Gantry asked for, not an error.
        if !gantry_kafka::is_eof(&error) {
            error!(error = %error, reason, "librdkafka");
        }
    }
}

/// A change of this member's share of the group, as librdkafka reports it around a
/// rebalance. Each has one handler in [`Ctx`].
enum GroupEvent {
    /// Before the partitions are taken away: their workers land what they hold and stop.
    Revoked(Vec<i32>),
    /// After partitions are given: each gets a worker, which recovers it first.
    Assigned(Vec<i32>),
}

impl GroupEvent {
    fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
        let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        parts.sort_unstable();
        parts.dedup();
        parts
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            self.on_group_event(GroupEvent::Revoked(GroupEvent::partitions(tpl)));
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            // Nothing is fetched for a partition until its worker has recovered: a worker
            // stuck in recovery (retrying a broker or ClickHouse that cannot answer it) would
            // otherwise fill its channel and block the poller, starving every other partition.
            if let Err(e) = c.pause(tpl) {
                warn!(error = %e, "assigned partitions not paused until recovered");
            }
            self.on_group_event(GroupEvent::Assigned(GroupEvent::partitions(tpl)));
        }
    }
}

impl Ctx {
    fn on_group_event(&self, event: GroupEvent) {
        match event {
            GroupEvent::Revoked(parts) => {
                info!(?parts, "partitions revoked");
                self.stop_workers(&parts);
            }
            GroupEvent::Assigned(parts) => {
                info!(?parts, "partitions assigned");
                for p in parts {
                    self.start_worker(p);
                }
            }
        }
    }

    fn start_worker(&self, p: i32) {
        let mut workers = self.workers.lock().expect("workers lock");
        if workers.contains_key(&p) {
            return;
        }
        let w = self.instance.spawn_worker(p, &self.rt);
        let budget =
            Arc::new(crate::ByteBudget::new(self.instance.config().worker_buffer_bytes_max));
        workers.insert(p, WorkerHandle { w, fetching: false, budget });
    }

    /// Resumes fetching each partition whose worker has just recovered (both topics).
    fn resume_recovered(&self, consumer: &BaseConsumer<Ctx>, cfg: &PipelineConfig) {
        let mut workers = self.workers.lock().expect("workers lock");
        for (p, h) in workers.iter_mut() {
            if h.fetching || !h.w.recovered.load(Ordering::SeqCst) {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&cfg.lane_topic, *p);
            tpl.add_partition(&cfg.account_topic, *p);
            match consumer.resume(&tpl) {
                Ok(()) => h.fetching = true,
                Err(e) => warn!(partition = p, error = %e, "fetch not resumed; retrying"),
            }
        }
    }

    /// Closes the workers' channels and waits for them to land their last batch.
    fn stop_workers(&self, parts: &[i32]) {
        let handles: Vec<(i32, WorkerHandle)> = {
            let mut workers = self.workers.lock().expect("workers lock");
            parts.iter().filter_map(|p| workers.remove(p).map(|h| (*p, h))).collect()
        };
        for (p, h) in handles {
            drop(h.w.tx);
            match self.rt.block_on(h.w.done) {
                Ok(Ok(())) => info!(partition = p, "worker stopped"),
                Ok(Err(e)) => {
                    error!(partition = p, error = %e, "worker failed");
                    self.failed.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    error!(partition = p, error = %e, "worker panicked");
                    self.failed.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Hands a chunk to partition `p`'s worker, blocking while the worker is behind: this is
    /// the backpressure. A partition without a worker (revoked meanwhile) drops it.
    /// It waits first for the worker's budget to have room for the chunk's bytes.
    fn send(&self, p: i32, mut chunk: Chunk) {
        let Some((tx, budget)) = self.sender(p) else { return };
        let bytes = chunk.data.len();
        if !budget.acquire(bytes, || !tx.is_closed()) {
            return;
        }
        chunk.charged = Some((budget, bytes));
        if let Err(mpsc::error::SendError(unsent)) = tx.blocking_send(chunk) {
            self.instance.give_back(unsent); // releases its bytes
        }
    }

    fn sender(&self, p: i32) -> Option<(mpsc::Sender<Chunk>, Arc<crate::ByteBudget>)> {
        let workers = self.workers.lock().expect("workers lock");
        workers.get(&p).map(|h| (h.w.tx.clone(), h.budget.clone()))
    }

    /// Every assigned partition has a worker that has finished recovering.
    fn all_recovered(&self) -> bool {
        self.workers
            .lock()
            .expect("workers lock")
            .values()
            .all(|h| h.w.recovered.load(Ordering::SeqCst))
    }

    fn any_worker_finished(&self) -> bool {
        self.workers.lock().expect("workers lock").values().any(|h| h.w.done.is_finished())
    }
}

/// Runs `attempt` until it succeeds or fails for good, waiting with backoff (as recovery
/// does) while its error may pass — a broker or ClickHouse that is not up yet. `None` if
/// `stop` is set meanwhile.
fn retry_at_start<T>(
    stop: &AtomicBool,
    waiting_for: &str,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<Option<T>> {
    let mut backoff = RECOVERY_RETRY_FIRST;
    loop {
        match attempt() {
            Ok(v) => return Ok(Some(v)),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "{waiting_for}; retrying")
            }
        }
        std::thread::sleep(backoff);
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        backoff = (backoff * 2).min(RECOVERY_RETRY_MAX);
    }
}

/// Runs the engine until stopped (`stop`), or until idle when `exit_when_idle_ms` is set.
pub fn run(
    cfg: PipelineConfig,
    tariffs: Arc<TariffStore>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .thread_name("gantry-worker")
        .build()?;
    let Some(mut poller) = Poller::start(&cfg, tariffs, rt.handle().clone(), &stop)? else {
        return Ok(RunSummary::stopped_before_start());
    };
    while poller.poll_once() == Flow::Continue {
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    poller.shutdown()
}

/// Worker threads of the instance's runtime: the partition workers' CPU work runs here. Two
/// is the development and CI machine's core count; beside the polling thread and
/// librdkafka's own threads, more only made the workers contend with them.
const WORKER_THREADS: usize = 2;

/// A pending chunk is handed to its worker at this many bytes of payload even if it has fewer
/// than `chunk_messages_max` messages (large lane messages): bounds the poller's buffering.
const CHUNK_BYTES_MAX: usize = 32 << 20;

/// Whether the poll loop goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The polling thread's state: the group consumer, the chunks being filled per
/// topic-partition, and the clocks that decide when to hand them on, commit and stop.
struct Poller<'c> {
    cfg: &'c PipelineConfig,
    consumer: BaseConsumer<Ctx>,
    commits: std_mpsc::Receiver<CommitRequest>,
    pending: Pending,
    started: Instant,
    last_landed: Instant,
    last_flush: Instant,
    last_message: Instant,
    last_housekeeping: Instant,
}

impl<'c> Poller<'c> {
    /// Builds the shared pieces and the lander, joins the group and subscribes.
    /// `None` if `stop` is set while the broker is still being waited for.
    fn start(
        cfg: &'c PipelineConfig,
        tariffs: Arc<TariffStore>,
        rt: tokio::runtime::Handle,
        stop: &AtomicBool,
    ) -> Result<Option<Poller<'c>>> {
        let store = gantry_clickhouse::Store::new(&cfg.clickhouse_url, &cfg.database)
            .with_insert_compression(cfg.insert_compression);
        let status = gantry_kafka::StatusProducer::new(&cfg.brokers, &cfg.status_topic)?;
        let io = Live { store, status, brokers: cfg.brokers.clone() };
        let (instance, commit_rx) = Instance::start(cfg, tariffs, io, &rt);
        // A tariff version whose files were edited after it was used stops the start.
        let unchanged = || rt.block_on(instance.check_tariffs_unchanged());
        if retry_at_start(stop, "tariff versions not checked yet", unchanged)?.is_none() {
            return Ok(None);
        }
        if let (Some(root), 1..) = (&cfg.tariff_dir, cfg.tariff_scan_interval_ms) {
            rt.spawn(crate::tariffs::watch(instance.shared.clone(), root.clone()));
        }
        let ctx = Ctx {
            instance,
            rt,
            workers: Mutex::new(HashMap::new()),
            failed: AtomicBool::new(false),
        };
        let mut consumer_cfg =
            gantry_kafka::consumer_config(&cfg.brokers, &cfg.group_id, cfg.session_timeout_ms);
        if let Some(id) = &cfg.group_instance_id {
            consumer_cfg.set("group.instance.id", id);
        }
        // librdkafka's own debug contexts (`fetch`, `cgrp`, …), for an operator chasing a
        // broker's behaviour; its lines go to the log at debug level.
        if let Ok(contexts) = std::env::var("GANTRY_RDKAFKA_DEBUG") {
            consumer_cfg.set("debug", contexts);
        }
        let consumer: BaseConsumer<Ctx> = consumer_cfg.create_with_context(ctx)?;
        // A broker that is down (or topics not created yet) at start is waited for; topics
        // that are not co-partitioned are a configuration error.
        let copartitioned = || {
            gantry_kafka::check_copartitioned(&consumer, &cfg.lane_topic, &cfg.account_topic)
                .map_err(PipelineError::from)
        };
        let Some(partitions) =
            retry_at_start(stop, "input topics not readable yet", copartitioned)?
        else {
            return Ok(None);
        };
        info!(partitions, lane = %cfg.lane_topic, accounts = %cfg.account_topic, "topics are co-partitioned");
        consumer.subscribe(&[&cfg.lane_topic, &cfg.account_topic])?;
        let now = Instant::now();
        Ok(Some(Poller {
            cfg,
            consumer,
            commits: commit_rx,
            pending: Pending::default(),
            started: now,
            last_landed: now,
            last_flush: now,
            last_message: now,
            last_housekeeping: now,
        }))
    }

    /// One poll and what it calls for.
    fn poll_once(&mut self) -> Flow {
        let polled = self.consumer.poll(Duration::from_millis(POLL_TIMEOUT_MS));
        let got_message = matches!(polled, Some(Ok(_)));
        match polled {
            Some(Ok(m)) => self.pending.on_message(self.cfg, self.consumer.context(), &m),
            Some(Err(KafkaError::PartitionEOF(p))) => self.on_partition_eof(p),
            Some(Err(e)) => warn!(error = %e, "kafka"),
            None => {}
        }
        let now = Instant::now();
        if got_message {
            self.last_message = now;
            if now.duration_since(self.last_housekeeping)
                < Duration::from_millis(HOUSEKEEPING_INTERVAL_MS)
            {
                return Flow::Continue;
            }
        }
        self.last_housekeeping = now;
        self.housekeeping(got_message)
    }

    fn topic_name(&self, t: Topic) -> &'c str {
        match t {
            Topic::LaneTx => &self.cfg.lane_topic,
            Topic::AccountEvents => &self.cfg.account_topic,
        }
    }

    /// End of partition `p` of one of the two topics. The event does not say which: ask
    /// the consumer which of the two is at its end (rare: only when it catches up), and tell
    /// that side's worker, so its merge stops waiting for it.
    fn on_partition_eof(&mut self, p: i32) {
        self.hand_on(Some(p));
        for t in [Topic::LaneTx, Topic::AccountEvents] {
            let name = self.topic_name(t);
            let high =
                gantry_kafka::cached_high_watermark(&self.consumer, name, p).unwrap_or(i64::MAX);
            let next = self.pending.last_offset.get(&(t, p)).map_or(-1, |o| o + 1);
            let position = self.consumer.position().ok().and_then(|tpl| offset_in(&tpl, name, p));
            if next >= high || position.is_some_and(|o| o >= high) {
                let ctx = self.consumer.context();
                ctx.send(p, ctx.instance.at_end(t));
            }
        }
    }

    /// Timers, offset commits and worker health, between polls.
    fn housekeeping(&mut self, got_message: bool) -> Flow {
        let ctx = self.consumer.context();
        if ctx.failed.load(Ordering::SeqCst) || ctx.any_worker_finished() {
            return Flow::Stop;
        }
        ctx.resume_recovered(&self.consumer, self.cfg);
        let now = Instant::now();
        if now.duration_since(self.last_flush) >= Duration::from_millis(CHUNK_FLUSH_MS) {
            let handed = !self.pending.chunks.is_empty();
            self.hand_on(None);
            self.last_flush = now;
            if handed {
                // Handing on may block on a busy worker; time spent here is not idle time
                // (librdkafka may hold fetched messages that poll has not returned yet).
                self.last_message = Instant::now();
            }
        }
        self.commit_landed(CommitMode::Async);
        // Drained: the last poll returned nothing, nothing arrived for `exit_when_idle_ms`, and
        // every partition's fetch position is at its high watermark.
        if self.cfg.exit_when_idle_ms > 0
            && !got_message
            && self.last_message.elapsed() >= Duration::from_millis(self.cfg.exit_when_idle_ms)
            && self.consumer.context().all_recovered()
            && caught_up(&self.consumer)
        {
            info!("all partitions drained; stopping");
            self.hand_on(None);
            self.mark_all_at_end();
            return Flow::Stop;
        }
        Flow::Continue
    }

    /// Tells every worker that both its topics are at their end — true when the run is
    /// drained (every position at its high watermark) — so the drain that follows merges
    /// what each holds to the end: a drain otherwise never gives up on a side that is not
    /// known to be at its end (an earlier message might still come), and a lane record
    /// waiting for such a side would be left for a run that never comes.
    fn mark_all_at_end(&mut self) {
        let ctx = self.consumer.context();
        let parts: Vec<i32> = ctx.workers.lock().expect("workers lock").keys().copied().collect();
        for p in parts {
            for t in [Topic::LaneTx, Topic::AccountEvents] {
                ctx.send(p, ctx.instance.at_end(t));
            }
        }
    }

    /// Hands every pending chunk (of partition `only`, if given) to its worker.
    fn hand_on(&mut self, only: Option<i32>) {
        self.pending.hand_on(self.consumer.context(), only);
    }

    /// Commits the offsets of every batch landed since the last call (informational: the
    /// journal in ClickHouse, not the group's offsets, decides where a partition resumes).
    fn commit_landed(&mut self, mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        while let Ok(c) = self.commits.try_recv() {
            self.last_landed = Instant::now();
            let (lane, acct) = (Offset::Offset(c.lane_next), Offset::Offset(c.acct_next));
            let _ = tpl.add_partition_offset(&self.cfg.lane_topic, c.partition, lane);
            let _ = tpl.add_partition_offset(&self.cfg.account_topic, c.partition, acct);
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, mode) {
                warn!(error = %e, "offset commit (informational; ClickHouse holds the truth)");
            }
        }
    }

    /// Hands on what is pending, lets every worker land what it holds, commits their last
    /// offsets and reports the run.
    fn shutdown(mut self) -> Result<RunSummary> {
        self.hand_on(None);
        let ctx = self.consumer.context();
        let parts: Vec<i32> = ctx.workers.lock().expect("workers lock").keys().copied().collect();
        ctx.stop_workers(&parts);
        self.commit_landed(CommitMode::Sync);
        let ctx = self.consumer.context();
        if ctx.failed.load(Ordering::SeqCst) {
            return Err(PipelineError::Worker(-1, "a partition worker failed; see the log".into()));
        }
        let latency_ms = ctx.instance.latency_ms();
        Ok(RunSummary {
            messages: self.pending.messages,
            elapsed: self.started.elapsed(),
            until_last_landed: self.last_landed.duration_since(self.started),
            latency_ms,
        })
    }
}

/// The chunks being filled per topic-partition between hand-ons.
#[derive(Default)]
struct Pending {
    chunks: HashMap<(Topic, i32), Chunk>,
    /// The last offset polled per topic-partition (to tell which topic an EOF is about).
    last_offset: HashMap<(Topic, i32), i64>,
    /// Messages polled from both input topics.
    messages: u64,
}

impl Pending {
    /// A message: copied into its topic-partition's pending chunk, which is handed on when
    /// full.
    fn on_message(
        &mut self,
        cfg: &PipelineConfig,
        ctx: &Ctx,
        m: &rdkafka::message::BorrowedMessage<'_>,
    ) {
        self.messages += 1;
        let topic = if m.topic() == cfg.lane_topic { Topic::LaneTx } else { Topic::AccountEvents };
        let key = (topic, m.partition());
        self.last_offset.insert(key, m.offset());
        let chunk = self.chunks.entry(key).or_insert_with(|| ctx.instance.chunk(topic));
        chunk.push(m.offset(), m.timestamp().to_millis(), m.payload().unwrap_or(&[]));
        if chunk.msgs.len() >= cfg.chunk_messages_max || chunk.data.len() >= CHUNK_BYTES_MAX {
            let chunk = self.chunks.remove(&key).expect("just used");
            ctx.send(key.1, chunk);
        }
    }

    /// Hands every pending chunk (of partition `only`, if given) to its worker.
    fn hand_on(&mut self, ctx: &Ctx, only: Option<i32>) {
        let keys: Vec<(Topic, i32)> =
            self.chunks.keys().filter(|(_, p)| only.is_none_or(|o| o == *p)).copied().collect();
        for k in keys {
            let chunk = self.chunks.remove(&k).expect("key listed");
            ctx.send(k.1, chunk);
        }
    }
}

/// The offset `tpl` holds for `topic`/`partition`, if it is a real offset.
fn offset_in(tpl: &TopicPartitionList, topic: &str, partition: i32) -> Option<i64> {
    match tpl.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// How long the drained check waits for the group's committed offsets (asked once per
/// check, only for partitions nothing was consumed from yet): a broker that takes longer is
/// not answering, and the check simply says "not drained" this time.
const COMMITTED_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Every assigned partition of both topics has been consumed to its high watermark.
fn caught_up(consumer: &BaseConsumer<Ctx>) -> bool {
    let Ok(assignment) = consumer.assignment() else { return false };
    if assignment.count() == 0 {
        return false;
    }
    let Ok(position) = consumer.position() else { return false };
    // A partition nothing was consumed from since the assignment has no position yet: it
    // stands where the group's committed offset is (asked of the broker only then, once).
    let committed = std::cell::OnceCell::new();
    assignment.elements().iter().all(|e| {
        // The high watermark the fetches reported (see `cached_high_watermark`); a partition
        // never fetched yet is not caught up.
        let Some(high) = gantry_kafka::cached_high_watermark(consumer, e.topic(), e.partition())
        else {
            return false;
        };
        let offset_in = |tpl: &TopicPartitionList| offset_in(tpl, e.topic(), e.partition());
        let pos = offset_in(&position).or_else(|| {
            committed
                .get_or_init(|| consumer.committed(COMMITTED_QUERY_TIMEOUT).ok())
                .as_ref()
                .and_then(offset_in)
        });
        high == 0 || pos.is_some_and(|o| o >= high)
    })
}
