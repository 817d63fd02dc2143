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

use crate::worker::{Chunk, CommitRequest, Msg, Worker};
use crate::{PipelineConfig, PipelineError, Result, Shared};

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

struct WorkerHandle {
    tx: mpsc::Sender<Chunk>,
    done: tokio::task::JoinHandle<Result<()>>,
}

struct Ctx {
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    workers: Mutex<HashMap<i32, WorkerHandle>>,
    commits: Mutex<std_mpsc::Sender<CommitRequest>>,
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

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            self.stop_workers(&parts);
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            parts.sort_unstable();
            parts.dedup();
            info!(?parts, "partitions assigned");
            for p in parts {
                self.start_worker(p);
            }
        }
    }
}

impl Ctx {
    fn start_worker(&self, p: i32) {
        let mut workers = self.workers.lock().expect("workers lock");
        if workers.contains_key(&p) {
            return;
        }
        let (tx, rx) = mpsc::channel(self.shared.cfg.channel_chunks_max);
        let shared = self.shared.clone();
        let commits = self.commits.lock().expect("commits lock").clone();
        let done = self.rt.spawn(async move {
            let w = tokio::task::spawn_blocking(move || Worker::recover(shared, p, commits))
                .await
                .map_err(|e| PipelineError::Worker(p, e.to_string()))??;
            w.run(rx).await
        });
        workers.insert(p, WorkerHandle { tx, done });
    }

    /// Closes the workers' channels and waits for them to land their last batch.
    fn stop_workers(&self, parts: &[i32]) {
        let handles: Vec<(i32, WorkerHandle)> = {
            let mut workers = self.workers.lock().expect("workers lock");
            parts.iter().filter_map(|p| workers.remove(p).map(|h| (*p, h))).collect()
        };
        for (p, h) in handles {
            drop(h.tx);
            match self.rt.block_on(h.done) {
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

    fn sender(&self, p: i32) -> Option<mpsc::Sender<Chunk>> {
        self.workers.lock().expect("workers lock").get(&p).map(|h| h.tx.clone())
    }

    fn any_worker_finished(&self) -> bool {
        self.workers.lock().expect("workers lock").values().any(|h| h.done.is_finished())
    }
}

/// Runs the engine until stopped (`stop`), or until idle when `exit_when_idle_ms` is set.
pub fn run(
    cfg: PipelineConfig,
    tariffs: Arc<TariffStore>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("gantry-worker")
        .build()?;
    let store = gantry_clickhouse::Store::new(&cfg.clickhouse_url, &cfg.database)
        .with_insert_compression(cfg.insert_compression);
    let status = gantry_kafka::StatusProducer::new(&cfg.brokers, &cfg.status_topic)?;
    let latency_ms = std::sync::Mutex::new(
        hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).expect("histogram bounds"),
    );
    let (lander_tx, lander_rx) = tokio::sync::mpsc::channel(crate::land::LANDER_QUEUE_JOBS);
    let shared = Arc::new(Shared {
        topics: cfg.topics(),
        cfg: cfg.clone(),
        tariffs,
        store,
        status,
        latency_ms,
        chunk_pool: crate::ChunkPool::new(),
        lander: lander_tx,
    });
    let (commit_tx, commit_rx) = std_mpsc::channel();
    rt.spawn(crate::land::lander(shared.clone(), lander_rx, commit_tx.clone()));
    let ctx = Ctx {
        shared,
        rt: rt.handle().clone(),
        workers: Mutex::new(HashMap::new()),
        commits: Mutex::new(commit_tx),
        failed: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<Ctx> =
        gantry_kafka::consumer_config(&cfg.brokers, &cfg.group_id, cfg.session_timeout_ms)
            .create_with_context(ctx)?;
    let partitions =
        gantry_kafka::check_copartitioned(&consumer, &cfg.lane_topic, &cfg.account_topic)?;
    info!(partitions, lane = %cfg.lane_topic, accounts = %cfg.account_topic, "topics are co-partitioned");
    consumer.subscribe(&[&cfg.lane_topic, &cfg.account_topic])?;

    let started = Instant::now();
    let mut messages = 0u64;
    let mut last_landed = started;
    let mut pending: HashMap<(Topic, i32), Chunk> = HashMap::new();
    let mut last_offset: HashMap<(Topic, i32), i64> = HashMap::new();
    let mut last_flush = Instant::now();
    let mut last_message = Instant::now();
    let topic_of =
        |name: &str| if name == cfg.lane_topic { Topic::LaneTx } else { Topic::AccountEvents };
    let topic_name = |t: Topic| {
        if t == Topic::LaneTx {
            cfg.lane_topic.as_str()
        } else {
            cfg.account_topic.as_str()
        }
    };

    let hand_on = |pending: &mut HashMap<(Topic, i32), Chunk>, only: Option<i32>| {
        let keys: Vec<(Topic, i32)> =
            pending.keys().filter(|(_, p)| only.is_none_or(|o| o == *p)).copied().collect();
        for k in keys {
            let chunk = pending.remove(&k).expect("key listed");
            if let Some(tx) = consumer.context().sender(k.1) {
                // Blocks while the worker is behind: this is the backpressure.
                let _ = tx.blocking_send(chunk);
            }
        }
    };

    let mut last_housekeeping = Instant::now();
    loop {
        let polled = consumer.poll(Duration::from_millis(POLL_TIMEOUT_MS));
        let got_message = matches!(polled, Some(Ok(_)));
        match polled {
            Some(Ok(m)) => {
                messages += 1;
                let key = (topic_of(m.topic()), m.partition());
                last_offset.insert(key, m.offset());
                let chunk = pending
                    .entry(key)
                    .or_insert_with(|| consumer.context().shared.chunk_pool.take(key.0));
                let payload = m.payload().unwrap_or(&[]);
                chunk.msgs.push(Msg {
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
                    start: chunk.data.len() as u32,
                    len: payload.len() as u32,
                });
                chunk.data.extend_from_slice(payload);
                if chunk.msgs.len() >= cfg.chunk_messages_max || chunk.data.len() >= (32 << 20) {
                    let chunk = pending.remove(&key).expect("just used");
                    if let Some(tx) = consumer.context().sender(key.1) {
                        let _ = tx.blocking_send(chunk);
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // The EOF event does not say which topic reached its end: ask the broker which
                // of the two did (rare: only when the consumer catches up).
                hand_on(&mut pending, Some(p));
                for t in [Topic::LaneTx, Topic::AccountEvents] {
                    let high = gantry_kafka::cached_high_watermark(&consumer, topic_name(t), p)
                        .unwrap_or(i64::MAX);
                    let next = last_offset.get(&(t, p)).map_or(-1, |o| o + 1);
                    let position = consumer.position().ok().and_then(|tpl| {
                        tpl.find_partition(topic_name(t), p).and_then(|e| {
                            if let Offset::Offset(o) = e.offset() {
                                Some(o)
                            } else {
                                None
                            }
                        })
                    });
                    if next >= high || position.is_some_and(|o| o >= high) {
                        if let Some(tx) = consumer.context().sender(p) {
                            let mut c = consumer.context().shared.chunk_pool.take(t);
                            c.at_end = true;
                            let _ = tx.blocking_send(c);
                        }
                    }
                }
            }
            Some(Err(e)) => warn!(error = %e, "kafka"),
            None => {}
        }
        let now = Instant::now();
        if got_message {
            last_message = now;
            if now.duration_since(last_housekeeping)
                < Duration::from_millis(HOUSEKEEPING_INTERVAL_MS)
            {
                continue;
            }
        }
        last_housekeeping = now;
        if stop.load(Ordering::SeqCst)
            || consumer.context().failed.load(Ordering::SeqCst)
            || consumer.context().any_worker_finished()
        {
            break;
        }
        if now.duration_since(last_flush) >= Duration::from_millis(CHUNK_FLUSH_MS) {
            let handed = !pending.is_empty();
            hand_on(&mut pending, None);
            last_flush = now;
            if handed {
                // Handing on may block on a busy worker; time spent here is not idle time
                // (librdkafka may hold fetched messages that poll has not returned yet).
                last_message = Instant::now();
            }
        }
        // Commit what workers have landed.
        let mut tpl = TopicPartitionList::new();
        while let Ok(c) = commit_rx.try_recv() {
            last_landed = Instant::now();
            let _ =
                tpl.add_partition_offset(&cfg.lane_topic, c.partition, Offset::Offset(c.lane_next));
            let _ = tpl.add_partition_offset(
                &cfg.account_topic,
                c.partition,
                Offset::Offset(c.acct_next),
            );
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(error = %e, "offset commit (informational; ClickHouse holds the truth)");
            }
        }
        // Drained: the last poll returned nothing, nothing arrived for `exit_when_idle_ms`, and
        // every partition's fetch position is at its high watermark.
        if cfg.exit_when_idle_ms > 0
            && !got_message
            && last_message.elapsed() >= Duration::from_millis(cfg.exit_when_idle_ms)
            && caught_up(&consumer)
        {
            info!("all partitions drained; stopping");
            break;
        }
    }
    hand_on(&mut pending, None);
    let parts: Vec<i32> =
        consumer.context().workers.lock().expect("workers lock").keys().copied().collect();
    consumer.context().stop_workers(&parts);
    while let Ok(c) = commit_rx.try_recv() {
        last_landed = Instant::now();
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition_offset(&cfg.lane_topic, c.partition, Offset::Offset(c.lane_next));
        let _ =
            tpl.add_partition_offset(&cfg.account_topic, c.partition, Offset::Offset(c.acct_next));
        let _ = consumer.commit(&tpl, CommitMode::Sync);
    }
    if consumer.context().failed.load(Ordering::SeqCst) {
        return Err(PipelineError::Worker(-1, "a partition worker failed; see the log".into()));
    }
    let latency_ms = consumer.context().shared.latency_ms.lock().expect("latency lock").clone();
    Ok(RunSummary {
        messages,
        elapsed: started.elapsed(),
        until_last_landed: last_landed.duration_since(started),
        latency_ms,
    })
}

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
        let offset_in = |tpl: &TopicPartitionList| {
            tpl.find_partition(e.topic(), e.partition()).and_then(|x| {
                if let Offset::Offset(o) = x.offset() {
                    Some(o)
                } else {
                    None
                }
            })
        };
        let pos = offset_in(&position).or_else(|| {
            committed
                .get_or_init(|| consumer.committed(Duration::from_secs(5)).ok())
                .as_ref()
                .and_then(offset_in)
        });
        high == 0 || pos.is_some_and(|o| o >= high)
    })
}
