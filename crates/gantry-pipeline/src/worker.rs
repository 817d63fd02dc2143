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
use std::time::Duration;

use tokio::time::Instant;

use gantry_clickhouse::{BatchRecord, Ranges, JOURNAL_FORMAT};
use gantry_core::engine::{LatePolicy, NO_CLOCK_MS};
use gantry_core::output::{Batch, Source, Topic};
use gantry_core::{Engine, TariffSet};
use gantry_kafka::Tail;
use tokio::sync::mpsc;
use tracing::info;

use crate::io::{Io, OnlyMissing, Reader, Store};
use crate::land::LandingJob;
use crate::merge::{
    close_batch, head_merge, lane_first, next_step, BatchView, SideView, Step, Wait,
};
use crate::{PipelineError, Result, Shared};

/// Messages of one topic-partition, copied out of the broker's response in one allocation:
/// what a worker's channel carries.
pub struct Chunk {
    pub topic: Topic,
    pub(crate) data: Vec<u8>,
    pub(crate) msgs: Vec<Msg>,
    /// The partition was at its end after these messages.
    pub at_end: bool,
    /// The worker budget its payload was taken from, and how much: released when the chunk
    /// is given back to the pool (`None` for a chunk read by the worker itself).
    pub(crate) charged: Option<(Arc<crate::ByteBudget>, usize)>,
}

impl Chunk {
    /// Appends a message (offsets rising; `timestamp_ms` its Kafka timestamp, if any).
    pub fn push(&mut self, offset: i64, timestamp_ms: Option<i64>, payload: &[u8]) {
        self.msgs.push(Msg {
            offset,
            timestamp_ms: timestamp_ms.unwrap_or(NO_TIMESTAMP_MS),
            start: self.data.len() as u32,
            len: payload.len() as u32,
        });
        self.data.extend_from_slice(payload);
    }

    /// Appends a message read outside the group consumer (a gap filled, a silent side read).
    fn push_read(&mut self, m: gantry_kafka::RangeMessage<'_>) {
        self.push(m.offset, m.timestamp_ms, m.payload);
    }
}

/// [`Msg::timestamp_ms`] of a message that has no Kafka timestamp (librdkafka's own value
/// for it). Below every real timestamp, so the merge takes such a message first, live and in
/// replay alike.
pub(crate) const NO_TIMESTAMP_MS: i64 = -1;

/// A message's Kafka timestamp as its rows' `Source` carries it.
#[inline]
fn kafka_timestamp(ms: i64) -> Option<i64> {
    (ms >= 0).then_some(ms)
}

#[derive(Clone, Copy)]
pub(crate) struct Msg {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub start: u32,
    pub len: u32,
}

/// A request to the group's driver: commit these next offsets of partition `partition` (its
/// batch up to them is committed in the store).
#[derive(Clone, Copy, Debug)]
pub struct CommitRequest {
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

    /// What the merge rule needs to know of this side.
    fn view(&self) -> SideView {
        SideView {
            head_ts: self.head().map(|(m, _)| m.timestamp_ms),
            closed: self.closed,
            exhausted: self.at_end && !self.buffered(),
            heard: self.heard,
        }
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

/// Rows a fresh batch has room for before its vectors grow (they are reused from then on).
const BATCH_ROWS_RESERVED: usize = 16_384;

/// How long a worker with no open batch and no merge wait sleeps if no chunk arrives: it has
/// processed all it can (the run loop goes on at once after a batch closes), so it has
/// nothing to do until one does, and this only bounds the sleep.
const NOTHING_DUE_SLEEP: Duration = Duration::from_secs(3600);

/// What woke a worker up.
enum Event {
    Chunk(Chunk),
    /// The channel closed: the partition was revoked, or the instance is stopping.
    Closed,
    /// The batch fell due or the merge wait passed.
    Timer,
    /// The batch in flight landed.
    Landed,
}

/// Where a partition's recovery starts.
struct StartingPoint {
    engine: Engine,
    /// The last batch the state includes (0: none).
    seq: u64,
    lane_next: i64,
    acct_next: i64,
}

pub(crate) struct Worker<I: Io> {
    shared: Arc<Shared<I>>,
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
    reader: Option<I::Reader>,
    /// The previous batch, while the lander lands it.
    landing: Option<tokio::sync::oneshot::Receiver<Batch>>,
    /// A landed batch's buffers, kept for the next batch.
    spare: Option<Batch>,
    /// The last batch whose state was taken for a checkpoint (or recovered from one).
    checkpointed_seq: u64,
    /// The open batch's clock (see `open_batch`).
    batch_clock_ms: i64,
    /// The epoch this worker owns the partition under (`gantry_owners`); every write it
    /// hands the lander is checked against the partition's current epoch first.
    epoch: u64,
    /// When a silent side was last read directly (`probe_silent_side`).
    last_probe: Option<Instant>,
    /// When recovery finished: a side not heard from for `merge_idle_ms` since is read
    /// directly.
    recovered_at: Instant,
}

/// Takes partition `p` for this instance (the next epoch in `gantry_owners`), then makes
/// sure no earlier owner can still write: after `fence_grace_ms` — if the partition was
/// another instance's — every INSERT still running for it is killed and waited out. Only
/// then does recovery read the journal (ARCHITECTURE.md, "Fencing").
async fn take_over<I: Io>(shared: &Shared<I>, p: i32) -> Result<u64> {
    let store = shared.io.store();
    let taken = store.take_ownership(p as u16, &shared.cfg.instance).await?;
    let Some(ownership) = taken else { return Err(PipelineError::LostTakeover(p)) };
    if ownership.previous.as_deref().is_some_and(|prev| prev != shared.cfg.instance) {
        tokio::time::sleep(Duration::from_millis(shared.cfg.fence_grace_ms)).await;
    }
    no_insert_running(store, p).await?;
    info!(partition = p, epoch = ownership.epoch, previous = ?ownership.previous, "partition taken");
    Ok(ownership.epoch)
}

/// Kills every INSERT of Gantry's still running for partition `p` and waits until none is
/// left: after this, nothing written for `p` before can still appear.
pub(crate) async fn no_insert_running(store: &impl Store, p: i32) -> Result<()> {
    while store.running_inserts(p as u16).await? > 0 {
        store.kill_running_inserts(p as u16).await?;
        tokio::time::sleep(KILL_WAIT).await;
    }
    Ok(())
}

/// How often a new owner looks again for killed INSERTs to be gone.
const KILL_WAIT: Duration = Duration::from_millis(100);

impl<I: Io> Worker<I> {
    /// Restores the partition's state (checkpoint + replay of later batches + completion of
    /// a batch that was planned but not committed).
    pub(crate) async fn recover(
        shared: Arc<Shared<I>>,
        partition: i32,
        commits: std::sync::mpsc::Sender<CommitRequest>,
    ) -> Result<Worker<I>> {
        let epoch = take_over(&shared, partition).await?;
        let reader = shared.io.reader()?;
        let start = Self::starting_point(&shared, &reader, partition).await?;
        let mut w = Worker {
            tariffs: shared.tariffs.snapshot(),
            shared,
            partition,
            engine: start.engine,
            seq: start.seq,
            lane: Side { next: start.lane_next, ..Side::default() },
            acct: Side { next: start.acct_next, ..Side::default() },
            batch: Batch::with_capacity(BATCH_ROWS_RESERVED),
            batch_from: (start.lane_next, start.acct_next),
            batch_opened: None,
            blocked_since: None,
            commits,
            reader: None,
            landing: None,
            spare: None,
            checkpointed_seq: start.seq,
            batch_clock_ms: NO_CLOCK_MS,
            epoch,
            last_probe: None,
            recovered_at: Instant::now(),
        };
        let journal = w.shared.io.store().batches_after(partition as u16, w.seq).await?;
        let (mut replayed, mut completed) = (0, 0);
        for b in &journal {
            w.check_continues(b)?;
            // Rows journaled before the clock column read 0: those batches had no clock.
            let clock_ms = if b.clock_ms > 0 { b.clock_ms } else { NO_CLOCK_MS };
            w.engine.set_clock_ms(clock_ms);
            // ... and prices with the tariff set it was priced with (rebuilt only when it
            // differs from the previous batch's).
            if b.tariff_set != w.tariffs.id() {
                w.tariffs = crate::tariffs::set_for_replay(&w.shared, b.tariff_set).await?;
            }
            // ... and parks late records only if it was journaled doing so.
            let parks = b.journal_format >= JOURNAL_FORMAT;
            w.engine.set_late_policy(if parks { LatePolicy::Park } else { LatePolicy::Reject });
            w.replay(&reader, b.ranges())?;
            w.settle_late_as_journaled(b)?;
            w.seq = b.batch_seq;
            if b.is_committed() {
                w.check_replayed(b)?;
                replayed += 1;
            } else {
                // Planned, not committed: finish it, writing only what is missing.
                w.complete_planned(b.ranges(), clock_ms, b.late_known.clone()).await?;
                completed += 1;
            }
            w.batch.clear();
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
        w.recovered_at = Instant::now();
        w.tariffs = w.shared.tariffs.snapshot();
        w.engine.set_late_policy(LatePolicy::Park);
        Ok(w)
    }

    /// Where recovery starts: the newest checkpoint, or an empty engine at the oldest
    /// retained offsets.
    async fn starting_point(
        shared: &Shared<I>,
        reader: &I::Reader,
        partition: i32,
    ) -> Result<StartingPoint> {
        let cfg = shared.cfg.engine();
        match shared.io.store().latest_checkpoint(partition as u16).await? {
            Some(c) => Ok(StartingPoint {
                engine: Engine::read_state(cfg, &c.state)
                    .map_err(|source| PipelineError::State { partition, source })?,
                seq: c.batch_seq,
                lane_next: c.lane_next,
                acct_next: c.acct_next,
            }),
            None => Ok(StartingPoint {
                engine: Engine::new(cfg),
                seq: 0,
                lane_next: reader.low_watermark(&shared.cfg.lane_topic, partition)?.max(0),
                acct_next: reader.low_watermark(&shared.cfg.account_topic, partition)?.max(0),
            }),
        }
    }

    /// A journaled batch must be the next one and start where the last one ended.
    fn check_continues(&self, b: &BatchRecord) -> Result<()> {
        let mismatch = |detail: String| PipelineError::ReplayMismatch {
            partition: self.partition,
            seq: b.batch_seq,
            detail,
        };
        if b.batch_seq != self.seq + 1 {
            return Err(mismatch(format!(
                "journal jumps from batch {} to {}",
                self.seq, b.batch_seq
            )));
        }
        let r = b.ranges();
        if r.lane_from != self.lane.next || r.acct_from != self.acct.next {
            return Err(mismatch("ranges do not continue the previous batch".into()));
        }
        Ok(())
    }

    /// A committed batch, replayed, must count what its journal row says it counted:
    /// otherwise the state would not be the one its rows were written from.
    fn check_replayed(&self, b: &BatchRecord) -> Result<()> {
        let c = self.batch.counts;
        if (c.lane_records, c.settled, c.account_events)
            == (b.lane_records, b.settled, b.account_events)
        {
            return Ok(());
        }
        Err(PipelineError::ReplayMismatch {
            partition: self.partition,
            seq: b.batch_seq,
            detail: format!(
                "replayed {} records / {} settled, journal says {} / {}",
                c.lane_records, c.settled, b.lane_records, b.settled
            ),
        })
    }

    /// Decides the late records of a batch just replayed by the answers journaled with it
    /// (asking again could find the batch's own rows, written before the crash).
    fn settle_late_as_journaled(&mut self, b: &BatchRecord) -> Result<()> {
        let parked = self.batch.late.len();
        if let Some(&i) = b.late_known.iter().find(|&&i| i as usize >= parked) {
            return Err(PipelineError::ReplayMismatch {
                partition: self.partition,
                seq: b.batch_seq,
                detail: format!(
                    "the journal answers for late record {i}, the replay parked {parked}"
                ),
            });
        }
        if parked > 0 {
            let mut known = vec![false; parked];
            for &i in &b.late_known {
                known[i as usize] = true;
            }
            self.engine.settle_late(&self.tariffs, &known, &mut self.batch);
        }
        Ok(())
    }

    /// Decides the open batch's late records (contract §3): asks ClickHouse which of their
    /// `tradeId`s an earlier batch settled — every earlier batch of the partition has landed
    /// by now — and settles the rest. Returns the indexes found, to journal with the batch.
    /// Retried with the landing's backoff while ClickHouse cannot answer.
    async fn settle_late(&mut self) -> Result<Vec<u32>> {
        if self.batch.late.is_empty() {
            return Ok(Vec::new());
        }
        // The lookup must see every earlier batch of the partition.
        self.wait_landed().await?;
        let b = &self.batch;
        let ids: Vec<(i32, &str)> =
            b.late.iter().map(|r| (r.trade_day, b.text(r.trade_id))).collect();
        let mut backoff = crate::land::LANDING_RETRY_FIRST;
        let found = loop {
            match self.shared.io.store().settled_trade_ids(self.partition as u16, &ids).await {
                Ok(found) => break found,
                Err(e) => {
                    tracing::warn!(partition = self.partition, error = %e, "late records not looked up; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(crate::land::LANDING_RETRY_MAX);
                }
            }
        };
        let known: Vec<bool> = ids.iter().map(|(_, id)| found.contains(*id)).collect();
        info!(
            partition = self.partition,
            late = known.len(),
            settled_before = found.len(),
            "late records looked up"
        );
        self.engine.settle_late(&self.tariffs, &known, &mut self.batch);
        Ok(known.iter().enumerate().filter(|(_, &k)| k).map(|(i, _)| i as u32).collect())
    }

    /// Lands the batch just replayed (journaled as planned, never committed), writing only
    /// the tables that do not hold it yet.
    async fn complete_planned(
        &mut self,
        r: Ranges,
        clock_ms: i64,
        late_known: Vec<u32>,
    ) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let (job, landed) = self.landing_job(r, batch, None, clock_ms, late_known);
        crate::land::land_group(&self.shared, &self.commits, vec![job], OnlyMissing::Yes).await;
        self.batch = landed
            .await
            .map_err(|e| PipelineError::Worker(self.partition, format!("recovery landing: {e}")))?;
        Ok(())
    }

    /// Re-processes the messages of `r` in head-merge order into `self.batch`.
    fn replay(&mut self, reader: &I::Reader, r: Ranges) -> Result<()> {
        let mut lane = (Vec::new(), Vec::new(), Vec::new()); // data, (offset, start, len), ts
        let mut acct = (Vec::new(), Vec::new(), Vec::new());
        for (topic, (from, to), buf) in [
            (&self.shared.cfg.lane_topic, (r.lane_from, r.lane_to), &mut lane),
            (&self.shared.cfg.account_topic, (r.acct_from, r.acct_to), &mut acct),
        ] {
            reader.read(topic, self.partition, from, to, |m| {
                buf.1.push((m.offset, buf.0.len(), m.payload.len()));
                buf.0.extend_from_slice(m.payload);
                buf.2.push(m.timestamp_ms.unwrap_or(NO_TIMESTAMP_MS));
            })?;
        }
        let (engine, batch, tariffs, p) =
            (&mut self.engine, &mut self.batch, &self.tariffs, self.partition);
        head_merge(&lane.2, &acct.2, |is_lane, i| {
            let (buf, topic) =
                if is_lane { (&lane, Topic::LaneTx) } else { (&acct, Topic::AccountEvents) };
            let (offset, start, len) = buf.1[i];
            let src =
                Source { topic, partition: p, offset, timestamp_ms: kafka_timestamp(buf.2[i]) };
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
        // After a batch closes, what is still buffered is processed at once: waiting for the
        // next event instead left a backlog that had all arrived (nothing more to wake the
        // worker) unprocessed for `NOTHING_DUE_SLEEP` — seen after a broker restart, when the
        // whole rest of the input came in one fetch.
        let mut resume = false;
        loop {
            let event = if resume { Event::Timer } else { self.next_event(&mut rx).await? };
            resume = false;
            match event {
                Event::Chunk(chunk) => {
                    self.accept(chunk)?;
                    // Take what else is already queued before processing.
                    while let Ok(chunk) = rx.try_recv() {
                        self.accept(chunk)?;
                    }
                }
                Event::Closed => return self.drain().await,
                Event::Timer | Event::Landed => {}
            }
            self.probe_silent_side();
            let full = self.process(false);
            let flush_every = Duration::from_millis(self.shared.cfg.flush_interval_ms);
            let due = self.batch_opened.is_some_and(|t| t.elapsed() >= flush_every);
            let batch = BatchView {
                messages: self.batch.counts.messages,
                full,
                both_sides_closed: self.lane.closed && self.acct.closed,
                due,
                // Looked at only when due: it collects a landed batch's buffers.
                previous_landed: due && self.previous_landed()?,
            };
            if close_batch(batch) {
                self.flush().await?;
                resume = true;
            }
        }
    }

    /// Waits for the next thing that can change what the worker does: a chunk, its channel
    /// closing, the batch falling due or the merge wait passing, or — while a due batch waits
    /// for the previous one — that batch landing.
    async fn next_event(&mut self, rx: &mut mpsc::Receiver<Chunk>) -> Result<Event> {
        let flush_every = Duration::from_millis(self.shared.cfg.flush_interval_ms);
        let idle = Duration::from_millis(self.shared.cfg.merge_idle_ms);
        let mut wait = match self.batch_opened {
            Some(t) => flush_every.saturating_sub(t.elapsed()),
            None => NOTHING_DUE_SLEEP,
        };
        if let Some(b) = self.blocked_since {
            // Past the wait, a side still not heard from is read directly every
            // `merge_idle_ms` (`probe_silent_side`); in between there is nothing to do.
            let since = self.last_probe.filter(|t| *t > b).unwrap_or(b);
            wait = wait.min(idle.saturating_sub(since.elapsed()));
        }
        let unheard = !self.lane.heard || !self.acct.heard;
        if unheard && !crate::mutation::on("probe_only_waiting") {
            // ... and so is a side never heard from since recovery, waiting or not.
            let since = self.last_probe.unwrap_or(self.recovered_at);
            wait = wait.min(idle.saturating_sub(since.elapsed()));
        }
        // A batch that is due while the previous one is still landing keeps growing (up to
        // its hard limits) instead of blocking the worker: wake up when either happens.
        let overdue =
            self.batch_opened.is_some_and(|t| t.elapsed() >= flush_every) && self.landing.is_some();
        if overdue {
            wait = NOTHING_DUE_SLEEP;
        }
        // The batch in flight is always waited on too, not only when a due batch waits for
        // it: a landing dropped unwritten (the partition fenced: another instance took it)
        // must stop this worker even when no more input comes, or the partition sat with an
        // owner that no longer writes (found by the simulator, seed 104766).
        let landing = async {
            match self.landing.as_mut() {
                Some(l) if overdue || !crate::mutation::on("landing_only_when_overdue") => l.await,
                _ => std::future::pending().await,
            }
        };
        // `biased`: the branches are tried in order, not at random, so a simulated run is a
        // function of its seed (a landed batch is also collected by `previous_landed`).
        let landed = tokio::select! {
            biased;
            r = tokio::time::timeout(wait, rx.recv()) => {
                return Ok(match r {
                    Ok(Some(chunk)) => Event::Chunk(chunk),
                    Ok(None) => Event::Closed,
                    Err(_) => Event::Timer,
                });
            }
            landed = landing => landed,
        };
        let b =
            landed.map_err(|e| PipelineError::Worker(self.partition, format!("landing: {e}")))?;
        self.landing = None;
        self.keep_spare(b);
        Ok(Event::Landed)
    }

    /// Revoked or stopping: everything already handed to this worker that the merge rule
    /// allows without waiting is processed and landed, in as many batches as it takes
    /// (stopping after one full batch would leave a drained run short of the end). What
    /// waits for the other side stays unprocessed, for the next owner to read again.
    async fn drain(mut self) -> Result<()> {
        loop {
            let full = self.process(true);
            if self.batch.counts.messages > 0 {
                self.flush().await?;
            }
            if !full {
                break;
            }
        }
        self.wait_landed().await?;
        // The state after the last batch, so the next owner (or this instance's restart)
        // starts from it with nothing to replay.
        if self.seq > self.checkpointed_seq {
            let mut state = Vec::new();
            self.engine.write_state(&mut state);
            let next = (self.lane.next, self.acct.next);
            crate::land::write_checkpoint(&self.shared, self.partition, self.seq, next, state)
                .await;
        }
        Ok(())
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
                let mut fill = Chunk {
                    topic: chunk.topic,
                    data: Vec::new(),
                    msgs: Vec::new(),
                    at_end: false,
                    charged: None,
                };
                reader.read(topic, self.partition, expected, first, |m| fill.push_read(m))?;
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

    /// A merge that has waited `merge_idle_ms` for one side reads that side directly before
    /// giving up on it (at most once per `merge_idle_ms`): its group fetch may have gone
    /// silent (see `RangeReader::read_tail`: after a broker restart Tansu can leave the group
    /// consumer at an offset it answers with nothing, so a side that was never heard from
    /// held its lane records forever). What the read finds is merged in order, as if fetched;
    /// a side the broker says is at its end is known to be; if the broker cannot answer,
    /// the merge rule goes on as before (a side heard from is given up on after the wait).
    /// A side not heard from for `merge_idle_ms` since recovery is read so too, whether or not
    /// anything waits for it: otherwise an account event left in such a silent stretch, with
    /// every lane record already processed, waited until the next one was produced (found
    /// by the simulator, seed 408).
    fn probe_silent_side(&mut self) {
        let idle = Duration::from_millis(self.shared.cfg.merge_idle_ms);
        if self.last_probe.is_some_and(|t| t.elapsed() < idle) {
            return;
        }
        let waited = self.blocked_since.is_some_and(|b| b.elapsed() >= idle);
        let unheard =
            self.recovered_at.elapsed() >= idle && !crate::mutation::on("probe_only_waiting");
        let (lane, acct) = (self.lane.view(), self.acct.view());
        let topic = match (lane.head_ts, acct.head_ts) {
            (Some(_), None) if waited && !acct.closed && !acct.exhausted => Topic::AccountEvents,
            (None, Some(_)) if waited && !lane.closed && !lane.exhausted => Topic::LaneTx,
            _ if unheard && !self.acct.heard => Topic::AccountEvents,
            _ if unheard && !self.lane.heard => Topic::LaneTx,
            _ => return,
        };
        self.last_probe = Some(Instant::now());
        let (side, name) = match topic {
            Topic::LaneTx => (&mut self.lane, &self.shared.cfg.lane_topic),
            Topic::AccountEvents => (&mut self.acct, &self.shared.cfg.account_topic),
        };
        let from = side.expected();
        let reader = self.reader.as_ref().expect("reader set by recovery");
        let mut chunk = self.shared.chunk_pool.take(topic);
        let max = self.shared.cfg.chunk_messages_max;
        let tail = reader.read_tail(name, self.partition, from, max, |m| chunk.push_read(m));
        let read = chunk.msgs.len();
        match tail {
            Ok(t) => {
                info!(partition = self.partition, ?topic, from, read, tail = ?t, "read a silent side directly");
                chunk.at_end = t == Tail::AtEnd;
                if t == Tail::Unknown && read == 0 {
                    self.shared.chunk_pool.give_back(chunk);
                } else if let Some(unused) = side.push(chunk) {
                    self.shared.chunk_pool.give_back(unused);
                }
            }
            Err(e) => {
                tracing::warn!(partition = self.partition, ?topic, from, error = %e, "a silent side could not be read");
                self.shared.chunk_pool.give_back(chunk);
            }
        }
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
            let wait = if draining {
                Wait::Draining
            } else if self.blocked_since.is_some_and(|b| b.elapsed() >= idle) {
                Wait::Passed
            } else {
                Wait::Within
            };
            let step = next_step(self.lane.view(), self.acct.view(), wait);
            match step {
                Step::Idle => {
                    self.blocked_since = None;
                    return false;
                }
                Step::Blocked => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return false;
                }
                Step::CloseAccountThenLane => self.acct.closed = true,
                Step::CloseLaneThenAccount => self.lane.closed = true,
                Step::Lane | Step::Account => {}
            }
            self.blocked_since = None;
            if self.batch_opened.is_none() {
                self.open_batch();
            }
            match step {
                Step::Lane | Step::CloseAccountThenLane => self.take_lane_run(),
                _ => self.take_account_head(),
            }
        }
    }

    /// The batch's first message is about to be processed: its flush timer starts, and its
    /// clock — the wall clock now, which bounds how far ahead a record may be dated — is
    /// set for the engine and journaled with the batch, so a replay checks the same.
    fn open_batch(&mut self) {
        self.batch_opened = Some(Instant::now());
        self.batch_clock_ms = self.shared.io.wall_clock_ms();
        self.engine.set_clock_ms(self.batch_clock_ms);
    }

    /// Processes the account head, which the merge rule has just chosen.
    fn take_account_head(&mut self) {
        let (m, payload) = self.acct.head().expect("the merge rule chose a head");
        let src = Source {
            topic: Topic::AccountEvents,
            partition: self.partition,
            offset: m.offset,
            timestamp_ms: kafka_timestamp(m.timestamp_ms),
        };
        self.engine.account_message(payload, src, &mut self.batch);
        if let Some(used) = self.acct.pop() {
            self.shared.chunk_pool.give_back(used);
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
                timestamp_ms: kafka_timestamp(m.timestamp_ms),
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
        tracing::debug!(partition = self.partition, seq = self.seq + 1, ?r, "batch closes");
        let late_known = self.settle_late().await?;
        self.seq += 1;
        // The checkpoint is the state right after this batch, taken now; it is written only
        // once the batch is committed.
        let checkpoint =
            self.seq.is_multiple_of(self.shared.cfg.checkpoint_every_batches).then(|| {
                self.checkpointed_seq = self.seq;
                let mut state = Vec::new();
                self.engine.write_state(&mut state);
                state
            });
        self.wait_landed().await?;
        let next = self.spare.take().unwrap_or_else(|| Batch::with_capacity(BATCH_ROWS_RESERVED));
        let batch = std::mem::replace(&mut self.batch, next);
        let (job, landed) = self.landing_job(r, batch, checkpoint, self.batch_clock_ms, late_known);
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
        clock_ms: i64,
        late_known: Vec<u32>,
    ) -> (LandingJob, tokio::sync::oneshot::Receiver<Batch>) {
        let mut batch = batch;
        // The rollups are rows of the batch like any other (see `Batch::roll_up`).
        batch.roll_up();
        let (done, landed) = tokio::sync::oneshot::channel();
        (
            LandingJob {
                partition: self.partition,
                seq: self.seq,
                ranges,
                batch,
                checkpoint,
                clock_ms,
                epoch: self.epoch,
                tariffs: self.tariffs.clone(),
                late_known,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offsets: &[i64]) -> Chunk {
        let msgs = offsets
            .iter()
            .map(|&offset| Msg { offset, timestamp_ms: offset * 10, start: 0, len: 0 })
            .collect();
        Chunk { topic: Topic::LaneTx, data: Vec::new(), msgs, at_end: false, charged: None }
    }

    fn buffered(side: &Side) -> Vec<i64> {
        side.chunks.iter().flat_map(|c| c.msgs.iter().map(|m| m.offset)).collect()
    }

    /// Redelivery is harmless: what is at or below the last processed or buffered offset is
    /// dropped, also inside a chunk that re-fetched a stretch; a chunk of nothing new is
    /// handed back for reuse.
    #[test]
    fn redelivered_offsets_are_dropped() {
        let mut side = Side { next: 10, ..Side::default() };
        assert!(side.push(chunk(&[7, 8, 9])).is_some(), "all below `next`: nothing kept");
        assert!(side.push(chunk(&[9, 10, 11])).is_none());
        assert!(side.push(chunk(&[11, 12, 10, 11, 12, 13])).is_none());
        assert_eq!(buffered(&side), [10, 11, 12, 13]);
        assert_eq!(side.expected(), 14);
        // Consuming moves `next`; the front chunk comes back once used up.
        assert_eq!(side.head().map(|(m, _)| m.offset), Some(10));
        assert!(side.pop().is_none());
        assert!(side.pop().is_some(), "the chunk of 10 and 11 is used up");
        assert_eq!(side.next, 12);
        assert!(side.heard);
    }

    /// What the merge sees of a side: a closed side has no head, an exhausted one is at its
    /// end with nothing buffered.
    #[test]
    fn a_sides_view() {
        let mut side = Side { next: 0, ..Side::default() };
        assert_eq!(side.view(), SideView::default());
        let mut end = chunk(&[0]);
        end.at_end = true;
        side.push(end);
        assert_eq!(side.view(), SideView { head_ts: Some(0), heard: true, ..SideView::default() });
        side.pop();
        assert!(side.view().exhausted);
        side.push(chunk(&[1]));
        side.closed = true;
        assert_eq!(side.view().head_ts, None);
    }
}
