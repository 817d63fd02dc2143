//! One partition's worker: recovery, then merge → process → batch → exactly-once write.
//!
//! Invariants:
//! * `lane.next` / `acct.next` are the offsets after the last message the engine processed;
//!   a batch covers `[batch_from, next)` of both topics.
//! * Within a batch the engine sees messages in head-merge order of those two ranges. When
//!   the live merge proceeds with one side empty (that side is at its end, or the wait passed
//!   `merge_idle_ms`), that side is *closed* for the rest of the batch, so its range ends
//!   there and a replay of the recorded ranges merges exactly the same way.
//! * A batch is planned, written, announced and committed in that order; on any error the
//!   same batch is retried with `only_missing` until it lands (a ClickHouse outage stalls the
//!   worker, whose full channel then stalls polling: nothing is lost, nothing doubles).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_clickhouse::Ranges;
use gantry_core::output::{Batch, Source, Topic};
use gantry_core::{Engine, TariffSet};
use gantry_kafka::RangeReader;
use tokio::sync::mpsc;
use tracing::info;

use crate::land::LandingJob;
use crate::merge::{head_merge, lane_first};
use crate::{PipelineError, Result, Shared};

/// Messages of one topic-partition, copied out of librdkafka in one allocation.
pub(crate) struct Chunk {
    pub topic: Topic,
    pub data: Vec<u8>,
    pub msgs: Vec<Msg>,
    /// The partition was at its end after these messages.
    pub at_end: bool,
}

#[derive(Clone, Copy)]
pub(crate) struct Msg {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub start: u32,
    pub len: u32,
}

/// A request to the poller: commit these next offsets of partition `partition`.
pub(crate) struct CommitRequest {
    pub partition: i32,
    pub lane_next: i64,
    pub acct_next: i64,
}

#[derive(Default)]
struct Side {
    chunks: VecDeque<Chunk>,
    /// Index of the head message in the front chunk.
    pos: usize,
    /// Offset after the last processed message.
    next: i64,
    at_end: bool,
    /// Anything (a message or an end-of-partition) arrived from this side since the start:
    /// until then the other side waits without limit, so a slow first fetch cannot reorder.
    heard: bool,
    /// No more messages of this side in the current batch.
    closed: bool,
}

impl Side {
    /// Buffers `c`; returns it when nothing of it is kept (so its buffer can be reused).
    fn push(&mut self, mut c: Chunk) -> Option<Chunk> {
        // Offsets only grow: anything at or below what is already processed or buffered is a
        // redelivery (Kafka's committed offset may lag ClickHouse's) and is dropped.
        // A chunk can itself hold a re-fetched stretch (seen when the broker answers a fetch
        // from inside a record batch with a later batch), so every offset must be new.
        let mut expected = self.expected();
        c.msgs.retain(|m| {
            let fresh = m.offset >= expected;
            if fresh {
                expected = m.offset + 1;
            }
            fresh
        });
        self.at_end = c.at_end;
        self.heard = true;
        if c.msgs.is_empty() {
            return Some(c);
        }
        self.chunks.push_back(c);
        None
    }

    fn head(&self) -> Option<(Msg, &[u8])> {
        if self.closed {
            return None;
        }
        let c = self.chunks.front()?;
        let m = c.msgs[self.pos];
        Some((m, &c.data[m.start as usize..(m.start + m.len) as usize]))
    }

    /// The offset the next arriving message should have.
    fn expected(&self) -> i64 {
        self.chunks.back().and_then(|c| c.msgs.last()).map_or(self.next, |m| m.offset + 1)
    }

    fn buffered(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// Consumes the head message; returns its chunk once every message of it is consumed.
    fn pop(&mut self) -> Option<Chunk> {
        let c = self.chunks.front().expect("pop after head");
        self.next = c.msgs[self.pos].offset + 1;
        self.pos += 1;
        if self.pos == c.msgs.len() {
            self.pos = 0;
            return self.chunks.pop_front();
        }
        None
    }
}

/// Most lane messages handed to the engine in one call: a batch is checked for closing
/// between calls, so one call may carry it past `batch_rows_max` by the rows of this many
/// messages (a few hundred rows: far inside the margin to ClickHouse's one-part block).
const LANE_RUN_MESSAGES_MAX: usize = 64;
/// ... and at most about this many bytes of them (64 KiB: ~200 lane records), which bounds
/// that overshoot when producers pack many records into one message.
const LANE_RUN_BYTES_MAX: usize = 64 << 10;

pub(crate) struct Worker {
    shared: Arc<Shared>,
    partition: i32,
    engine: Engine,
    seq: u64,
    lane: Side,
    acct: Side,
    batch: Batch,
    batch_from: (i64, i64),
    batch_opened: Option<Instant>,
    blocked_since: Option<Instant>,
    tariffs: Arc<TariffSet>,
    commits: std::sync::mpsc::Sender<CommitRequest>,
    /// For filling gaps in what the group consumer delivers.
    reader: Option<RangeReader>,
    /// The previous batch, while the lander lands it.
    landing: Option<tokio::sync::oneshot::Receiver<Batch>>,
    /// A landed batch's buffers, kept for the next batch.
    spare: Option<Batch>,
}

impl Worker {
    /// Restores the partition's state (checkpoint + replay of later batches + completion of
    /// a batch that was planned but not committed).
    pub(crate) fn recover(
        shared: Arc<Shared>,
        partition: i32,
        commits: std::sync::mpsc::Sender<CommitRequest>,
    ) -> Result<Worker> {
        let rt = tokio::runtime::Handle::current();
        let p16 = partition as u16;
        let cfg = shared.cfg.engine();
        let checkpoint = rt.block_on(shared.store.latest_checkpoint(p16))?;
        let reader = RangeReader::new(&shared.cfg.brokers)?;
        let (engine, seq, lane_next, acct_next) = match checkpoint {
            Some(c) => {
                let engine = Engine::read_state(cfg, &c.state)
                    .map_err(|source| PipelineError::State { partition, source })?;
                (engine, c.batch_seq, c.lane_next, c.acct_next)
            }
            None => {
                let lane_low = reader.low_watermark(&shared.cfg.lane_topic, partition)?.max(0);
                let acct_low = reader.low_watermark(&shared.cfg.account_topic, partition)?.max(0);
                (Engine::new(cfg), 0, lane_low, acct_low)
            }
        };
        let mut w = Worker {
            tariffs: shared.tariffs.snapshot(),
            shared,
            partition,
            engine,
            seq,
            lane: Side { next: lane_next, ..Side::default() },
            acct: Side { next: acct_next, ..Side::default() },
            batch: Batch::with_capacity(16_384),
            batch_from: (lane_next, acct_next),
            batch_opened: None,
            blocked_since: None,
            commits,
            reader: None,
            landing: None,
            spare: None,
        };
        let journal = rt.block_on(w.shared.store.batches_after(p16, seq))?;
        let (mut replayed, mut completed) = (0, 0);
        for b in &journal {
            if b.batch_seq != w.seq + 1 {
                return Err(PipelineError::ReplayMismatch {
                    partition,
                    seq: b.batch_seq,
                    detail: format!("journal jumps from batch {} to {}", w.seq, b.batch_seq),
                });
            }
            let r = b.ranges();
            if r.lane_from != w.lane.next || r.acct_from != w.acct.next {
                return Err(PipelineError::ReplayMismatch {
                    partition,
                    seq: b.batch_seq,
                    detail: "ranges do not continue the previous batch".into(),
                });
            }
            w.replay(&reader, r)?;
            w.seq = b.batch_seq;
            if b.is_committed() {
                let c = w.batch.counts;
                if (c.lane_records, c.settled, c.account_events)
                    != (b.lane_records, b.settled, b.account_events)
                {
                    return Err(PipelineError::ReplayMismatch {
                        partition,
                        seq: b.batch_seq,
                        detail: format!(
                            "replayed {} records / {} settled, journal says {} / {}",
                            c.lane_records, c.settled, b.lane_records, b.settled
                        ),
                    });
                }
                replayed += 1;
                w.batch.clear();
            } else {
                // Planned, not committed: finish it, writing only what is missing.
                let batch = std::mem::take(&mut w.batch);
                let (job, landed) = w.landing_job(r, batch, None);
                rt.block_on(crate::land::land_group(&w.shared, &w.commits, vec![job], true));
                w.batch = rt.block_on(landed).map_err(|e| {
                    PipelineError::Worker(partition, format!("recovery landing: {e}"))
                })?;
                w.batch.clear();
                completed += 1;
            }
            w.batch_from = (w.lane.next, w.acct.next);
        }
        info!(
            partition,
            seq = w.seq,
            lane_next = w.lane.next,
            acct_next = w.acct.next,
            replayed,
            completed,
            "partition recovered"
        );
        w.reader = Some(reader);
        Ok(w)
    }

    /// Re-processes the messages of `r` in head-merge order into `self.batch`.
    fn replay(&mut self, reader: &RangeReader, r: Ranges) -> Result<()> {
        let mut lane = (Vec::new(), Vec::new(), Vec::new()); // data, (offset, start, len), ts
        let mut acct = (Vec::new(), Vec::new(), Vec::new());
        for (topic, (from, to), buf) in [
            (&self.shared.cfg.lane_topic, (r.lane_from, r.lane_to), &mut lane),
            (&self.shared.cfg.account_topic, (r.acct_from, r.acct_to), &mut acct),
        ] {
            reader.read(topic, self.partition, from, to, |m| {
                buf.1.push((m.offset, buf.0.len(), m.payload.len()));
                buf.0.extend_from_slice(m.payload);
                buf.2.push(m.timestamp_ms.unwrap_or(-1));
            })?;
        }
        let (engine, batch, tariffs, p) =
            (&mut self.engine, &mut self.batch, &self.tariffs, self.partition);
        head_merge(&lane.2, &acct.2, |is_lane, i| {
            let (buf, topic) =
                if is_lane { (&lane, Topic::LaneTx) } else { (&acct, Topic::AccountEvents) };
            let (offset, start, len) = buf.1[i];
            let src = Source {
                topic,
                partition: p,
                offset,
                timestamp_ms: Some(buf.2[i]).filter(|t| *t >= 0),
            };
            let payload = &buf.0[start..start + len];
            match topic {
                Topic::LaneTx => engine.lane_message(tariffs, payload, src, batch),
                Topic::AccountEvents => engine.account_message(payload, src, batch),
            }
        });
        self.lane.next = r.lane_to;
        self.acct.next = r.acct_to;
        Ok(())
    }

    /// Live loop: until the channel closes (partition revoked or shutdown).
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Chunk>) -> Result<()> {
        let flush_every = Duration::from_millis(self.shared.cfg.flush_interval_ms);
        let idle = Duration::from_millis(self.shared.cfg.merge_idle_ms);
        loop {
            let wait = match (self.batch_opened, self.blocked_since) {
                (Some(t), _) => flush_every.saturating_sub(t.elapsed()),
                (None, Some(b)) => idle.saturating_sub(b.elapsed()),
                (None, None) => Duration::from_secs(3600),
            };
            let wait = match self.blocked_since {
                Some(b) => wait.min(idle.saturating_sub(b.elapsed())),
                None => wait,
            };
            // A batch that is due while the previous one is still landing keeps growing (up to
            // its hard limits) instead of blocking the worker: wake up when either happens.
            let overdue = self.batch_opened.is_some_and(|t| t.elapsed() >= flush_every)
                && self.landing.is_some();
            let wait = if overdue { Duration::from_secs(3600) } else { wait };
            let landing = async {
                match self.landing.as_mut() {
                    Some(l) if overdue => l.await,
                    _ => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                r = tokio::time::timeout(wait, rx.recv()) => Some(r),
                landed = landing => {
                    let b = landed.map_err(|e| PipelineError::Worker(self.partition, format!("landing: {e}")))?;
                    self.landing = None;
                    self.keep_spare(b);
                    None
                }
            };
            match event {
                Some(Ok(Some(chunk))) => {
                    self.accept(chunk)?;
                    // Take what else is already queued before processing.
                    while let Ok(chunk) = rx.try_recv() {
                        self.accept(chunk)?;
                    }
                }
                Some(Ok(None)) => {
                    // Revoked or stopping: everything already handed to this worker is
                    // processed and landed, in as many batches as it takes (stopping after
                    // one full batch would leave a drained run short of the end).
                    loop {
                        let full = self.process(true);
                        if self.batch.counts.messages > 0 {
                            self.flush().await?;
                        }
                        if !full {
                            break;
                        }
                    }
                    return self.wait_landed().await;
                }
                Some(Err(_)) | None => {}
            }
            let full = self.process(false);
            let due = self.batch_opened.is_some_and(|t| t.elapsed() >= flush_every);
            // Due batches close once the previous one has landed; a full batch (or one whose
            // both sides are closed, which cannot take more) waits for it.
            if self.batch.counts.messages > 0
                && (full
                    || (self.lane.closed && self.acct.closed)
                    || (due && self.previous_landed()?))
            {
                self.flush().await?;
            }
        }
    }

    /// Whether no batch is in flight any more (collecting a landed one's buffers).
    fn previous_landed(&mut self) -> Result<bool> {
        let Some(l) = self.landing.as_mut() else { return Ok(true) };
        match l.try_recv() {
            Ok(b) => {
                self.landing = None;
                self.keep_spare(b);
                Ok(true)
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => Ok(false),
            Err(e) => Err(PipelineError::Worker(self.partition, format!("landing: {e}"))),
        }
    }

    fn keep_spare(&mut self, mut b: Batch) {
        b.clear();
        self.spare = Some(b);
    }

    /// Buffers a chunk. If it starts past the offset expected next (the group resumed inside a
    /// producer batch on a broker that skips to the next batch, or a real gap such as a
    /// transaction marker), the missing offsets are read explicitly first, so no message is
    /// ever skipped.
    fn accept(&mut self, chunk: Chunk) -> Result<()> {
        let side = match chunk.topic {
            Topic::LaneTx => &mut self.lane,
            Topic::AccountEvents => &mut self.acct,
        };
        let expected = side.expected();
        tracing::debug!(partition = self.partition, topic = ?chunk.topic, expected, first = chunk.msgs.first().map(|m| m.offset), last = chunk.msgs.last().map(|m| m.offset), at_end = chunk.at_end, "chunk");
        if let Some(first) = chunk.msgs.iter().map(|m| m.offset).find(|&o| o >= expected) {
            if first > expected {
                let topic = match chunk.topic {
                    Topic::LaneTx => &self.shared.cfg.lane_topic,
                    Topic::AccountEvents => &self.shared.cfg.account_topic,
                };
                let reader = self.reader.as_ref().expect("reader set by recovery");
                let mut fill =
                    Chunk { topic: chunk.topic, data: Vec::new(), msgs: Vec::new(), at_end: false };
                tokio::task::block_in_place(|| {
                    reader.read(topic, self.partition, expected, first, |m| {
                        fill.msgs.push(Msg {
                            offset: m.offset,
                            timestamp_ms: m.timestamp_ms.unwrap_or(-1),
                            start: fill.data.len() as u32,
                            len: m.payload.len() as u32,
                        });
                        fill.data.extend_from_slice(m.payload);
                    })
                })?;
                info!(
                    partition = self.partition,
                    ?topic,
                    from = expected,
                    to = first,
                    filled = fill.msgs.len(),
                    "filled a gap in the fetched offsets"
                );
                if let Some(unused) = side.push(fill) {
                    self.shared.chunk_pool.give_back(unused);
                }
            }
        }
        if let Some(unused) = side.push(chunk) {
            self.shared.chunk_pool.give_back(unused);
        }
        Ok(())
    }

    /// Processes every message the merge rule allows; `true` when the batch is full.
    /// `draining`: the channel is closed, so nothing else will arrive.
    fn process(&mut self, draining: bool) -> bool {
        let idle = Duration::from_millis(self.shared.cfg.merge_idle_ms);
        loop {
            if self.batch.rows() >= self.shared.cfg.batch_rows_max
                || self.batch.arena_bytes() >= self.shared.cfg.batch_bytes_max
            {
                return true;
            }
            let waited = self.blocked_since.is_some_and(|b| b.elapsed() >= idle) || draining;
            let (lane_waited, acct_waited) =
                (waited && (self.lane.heard || draining), waited && (self.acct.heard || draining));
            let take_lane = match (self.lane.head(), self.acct.head()) {
                (Some((l, _)), Some((a, _))) => lane_first(l.timestamp_ms, a.timestamp_ms),
                (Some(_), None) if self.acct.closed => true,
                (None, Some(_)) if self.lane.closed => false,
                (Some(_), None) if (self.acct.at_end && !self.acct.buffered()) || acct_waited => {
                    self.acct.closed = true;
                    true
                }
                (None, Some(_)) if (self.lane.at_end && !self.lane.buffered()) || lane_waited => {
                    self.lane.closed = true;
                    false
                }
                (None, None) => {
                    self.blocked_since = None;
                    return false;
                }
                _ => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return false;
                }
            };
            self.blocked_since = None;
            self.batch_opened.get_or_insert_with(Instant::now);
            if take_lane {
                self.take_lane_run();
                continue;
            }
            let side = &mut self.acct;
            let (m, payload) = side.head().expect("head checked");
            let src = Source {
                topic: Topic::AccountEvents,
                partition: self.partition,
                offset: m.offset,
                timestamp_ms: Some(m.timestamp_ms).filter(|t| *t >= 0),
            };
            self.engine.account_message(payload, src, &mut self.batch);
            if let Some(used) = side.pop() {
                self.shared.chunk_pool.give_back(used);
            }
        }
    }

    /// Processes the lane head, which the merge rule has just chosen, and the lane messages
    /// after it in the same chunk that the rule would choose next (the account head stays
    /// where it is meanwhile), in one call, so the engine can look up their cards and trade
    /// ids a group at a time. The rows are those of taking them one by one.
    fn take_lane_run(&mut self) {
        let acct_ts = self.acct.head().map(|(a, _)| a.timestamp_ms);
        let acct_closed = self.acct.closed;
        let c = self.lane.chunks.front().expect("head checked");
        let from = self.lane.pos;
        let (mut to, mut bytes) = (from + 1, c.msgs[from].len as usize);
        while to < c.msgs.len() && to - from < LANE_RUN_MESSAGES_MAX && bytes < LANE_RUN_BYTES_MAX {
            let m = c.msgs[to];
            if !(acct_closed || acct_ts.is_some_and(|a| lane_first(m.timestamp_ms, a))) {
                break;
            }
            bytes += m.len as usize;
            to += 1;
        }
        let partition = self.partition;
        let msgs = c.msgs[from..to].iter().map(|m| {
            let src = Source {
                topic: Topic::LaneTx,
                partition,
                offset: m.offset,
                timestamp_ms: Some(m.timestamp_ms).filter(|t| *t >= 0),
            };
            (&c.data[m.start as usize..(m.start + m.len) as usize], src)
        });
        self.engine.lane_messages(&self.tariffs, msgs, &mut self.batch);
        for _ in from..to {
            if let Some(used) = self.lane.pop() {
                self.shared.chunk_pool.give_back(used);
            }
        }
    }

    fn ranges(&self) -> Ranges {
        Ranges {
            lane_from: self.batch_from.0,
            lane_to: self.lane.next,
            acct_from: self.batch_from.1,
            acct_to: self.acct.next,
        }
    }

    /// Closes the current batch and hands it to a landing task, then starts the next batch.
    /// At most one batch per partition is in flight: this waits for the previous one first,
    /// so the journal stays in order and a stalled ClickHouse stalls this worker.
    async fn flush(&mut self) -> Result<()> {
        let r = self.ranges();
        self.seq += 1;
        // The checkpoint is the state right after this batch, taken now; it is written only
        // once the batch is committed.
        let checkpoint =
            self.seq.is_multiple_of(self.shared.cfg.checkpoint_every_batches).then(|| {
                let mut state = Vec::new();
                self.engine.write_state(&mut state);
                state
            });
        self.wait_landed().await?;
        let next = self.spare.take().unwrap_or_else(|| Batch::with_capacity(16_384));
        let batch = std::mem::replace(&mut self.batch, next);
        let (job, landed) = self.landing_job(r, batch, checkpoint);
        self.shared
            .lander
            .send(job)
            .await
            .map_err(|_| PipelineError::Worker(self.partition, "the lander has stopped".into()))?;
        self.landing = Some(landed);
        self.batch_from = (self.lane.next, self.acct.next);
        self.batch_opened = None;
        self.lane.closed = false;
        self.acct.closed = false;
        // A new batch prices with the newest tariff set.
        self.tariffs = self.shared.tariffs.snapshot();
        Ok(())
    }

    /// Batch `self.seq`, covering `ranges`, ready to be landed; and where it comes back.
    fn landing_job(
        &self,
        ranges: Ranges,
        batch: Batch,
        checkpoint: Option<Vec<u8>>,
    ) -> (LandingJob, tokio::sync::oneshot::Receiver<Batch>) {
        let (done, landed) = tokio::sync::oneshot::channel();
        (
            LandingJob {
                partition: self.partition,
                seq: self.seq,
                ranges,
                batch,
                checkpoint,
                done,
            },
            landed,
        )
    }

    /// Waits until the batch in flight (if any) is landed; keeps its buffers for reuse.
    async fn wait_landed(&mut self) -> Result<()> {
        if let Some(h) = self.landing.take() {
            let b = h
                .await
                .map_err(|e| PipelineError::Worker(self.partition, format!("landing: {e}")))?;
            self.keep_spare(b);
        }
        Ok(())
    }
}
