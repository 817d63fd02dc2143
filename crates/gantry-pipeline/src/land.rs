//! Landing batches in ClickHouse, with group commit across the instance's partitions.
//!
//! Workers hand closed batches to one lander task. The lander takes every batch waiting at
//! that moment (up to [`GROUP_ROWS_MAX`] rows per table) and lands them as a group, in the
//! same order of steps as a single batch (ARCHITECTURE.md, "Batches"):
//!
//! 1. one `gantry_batches` INSERT with a *planned* row per batch;
//! 2. one INSERT per output table holding every batch's rows, each tagged with its own
//!    `(gantry_partition, batch_seq)`: one part, so each batch is in each table all or not;
//! 3. the status-list messages of every batch;
//! 4. one `gantry_batches` INSERT with a *committed* row per batch;
//!
//! then, per batch: the Kafka offset commit request, the latency sample, the checkpoint (if
//! the worker took one), and the batch's buffers back to its worker.
//!
//! A group is therefore exactly what several single batches would have been, only with a
//! part per table per group instead of per batch: with many partitions per instance that is
//! the difference between ClickHouse keeping up with its merges and "too many parts" (and
//! fewer part files to create and delete: a large share of ClickHouse's CPU on a small
//! host). No batch waits for another to fill up: the lander takes what is
//! there when it is free, so a group forms only while ClickHouse is busy with the previous one.
//!
//! On any error the same group is retried with `only_missing` until it lands. A worker has
//! at most one batch in flight, so the journal of each partition stays strictly in order.

use std::sync::Arc;
use std::time::Duration;

use gantry_clickhouse::{
    table_rows, BatchToWrite, CheckpointRecord, JournalEntry, Ranges, GROUP_ROWS_MAX,
};
use gantry_core::output::Batch;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use crate::io::{Io, OnlyMissing, StatusSink, Store};
use crate::worker::CommitRequest;
use crate::Shared;

/// Batches waiting for the lander. Each worker has at most one batch in flight, so this only
/// fills with more partitions than this on one instance; then workers wait (backpressure).
pub(crate) const LANDER_QUEUE_JOBS: usize = 1024;

/// The first wait before retrying a group that did not land: a blip (a dropped connection)
/// costs a tenth of a second.
pub(crate) const LANDING_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between retries (doubling from the first): an outage is noticed within
/// seconds of its end, without hammering a ClickHouse that is down.
pub(crate) const LANDING_RETRY_MAX: Duration = Duration::from_secs(5);

/// One closed batch on its way into ClickHouse. It owns everything it writes, so its worker
/// processes the next batch meanwhile.
pub(crate) struct LandingJob {
    pub partition: i32,
    pub seq: u64,
    pub ranges: Ranges,
    pub batch: Batch,
    /// Engine state after this batch, written once the batch is committed.
    pub checkpoint: Option<Vec<u8>>,
    /// The clock the batch's records were checked against, journaled with it.
    pub clock_ms: i64,
    /// The epoch its worker owns the partition under.
    pub epoch: u64,
    /// The tariff set the batch was priced with: stored before the batch is journaled.
    pub tariffs: Arc<gantry_core::TariffSet>,
    /// The late-record lookup's answers, journaled with the batch.
    pub late_known: Vec<u32>,
    /// Where the batch (its buffers) goes back once landed.
    pub done: oneshot::Sender<Batch>,
}

impl LandingJob {
    /// The most rows this batch puts in any one table.
    fn rows_max(&self) -> usize {
        table_rows(&self.batch).iter().map(|(_, n)| *n).max().unwrap_or(0)
    }
}

/// Runs the lander until every sender is gone.
pub(crate) async fn lander<I: Io>(
    shared: Arc<Shared<I>>,
    mut rx: mpsc::Receiver<LandingJob>,
    commits: std::sync::mpsc::Sender<CommitRequest>,
) {
    let mut carry: Option<LandingJob> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let rows = first.rows_max();
        let mut group = Group::new(first, rows);
        while let Ok(j) = rx.try_recv() {
            let rows = j.rows_max();
            if let Some(j) = group.offer(j, rows) {
                carry = Some(j);
                break;
            }
        }
        land_group(&shared, &commits, group.jobs, OnlyMissing::No).await;
    }
}

/// The batches landed together: whatever is waiting, in arrival order, while every table's
/// INSERT stays within [`GROUP_ROWS_MAX`] rows (one part). A batch alone is a group even if
/// it is larger (a batch is capped far below by `batch_rows_max`).
struct Group<J> {
    jobs: Vec<J>,
    /// The most rows any one table gets, summed over the jobs: an upper bound of each
    /// table's INSERT.
    rows: usize,
}

impl<J> Group<J> {
    fn new(first: J, rows: usize) -> Group<J> {
        Group { jobs: vec![first], rows }
    }

    /// Adds `job` (putting at most `rows` in any table) if the group still fits one part
    /// per table; hands it back otherwise, to start the next group.
    fn offer(&mut self, job: J, rows: usize) -> Option<J> {
        if self.rows + rows > GROUP_ROWS_MAX {
            return Some(job);
        }
        self.rows += rows;
        self.jobs.push(job);
        None
    }
}

/// Lands `jobs` as one group (retrying until it succeeds), then finishes each job.
pub(crate) async fn land_group<I: Io>(
    shared: &Shared<I>,
    commits: &std::sync::mpsc::Sender<CommitRequest>,
    jobs: Vec<LandingJob>,
    mut only_missing: OnlyMissing,
) {
    let mut jobs = jobs;
    if crate::mutation::on("commit_offsets_first") {
        for j in &jobs {
            let r = j.ranges;
            let (partition, lane_next, acct_next) = (j.partition, r.lane_to, r.acct_to);
            let _ = commits.send(CommitRequest { partition, lane_next, acct_next });
        }
    }
    let mut backoff = LANDING_RETRY_FIRST;
    loop {
        match try_land(shared, &jobs, only_missing).await {
            Ok(()) => break,
            Err(crate::PipelineError::Fenced(lost)) => {
                // Another instance owns these now: their batches are dropped unwritten (their
                // workers see the landing fail and stop); the rest of the group goes on.
                error!(partitions = ?lost, "partitions taken over by another instance; dropping their batches");
                jobs.retain(|j| !lost.contains(&j.partition));
                only_missing = OnlyMissing::Yes;
                if jobs.is_empty() {
                    return;
                }
            }
            Err(e) => {
                let batches: Vec<(i32, u64)> = jobs.iter().map(|j| (j.partition, j.seq)).collect();
                warn!(?batches, error = %e, "batches not landed; retrying");
                only_missing = OnlyMissing::Yes;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LANDING_RETRY_MAX);
            }
        }
    }
    for mut job in jobs {
        let r = job.ranges;
        let _ = commits.send(CommitRequest {
            partition: job.partition,
            lane_next: r.lane_to,
            acct_next: r.acct_to,
        });
        record_latency(shared, &job.batch);
        if let Some(state) = job.checkpoint.take() {
            let next = (job.ranges.lane_to, job.ranges.acct_to);
            write_checkpoint(shared, job.partition, job.seq, next, state).await;
        }
        // The worker may be gone (shutdown): then the buffers are simply dropped.
        let _ = job.done.send(job.batch);
    }
}

/// What a group must be for the journal to stay right (checked in debug builds): at most
/// one batch per partition (a worker has one in flight, so each partition's journal stays
/// strictly in order), and every row of a batch from inside the offset ranges it records.
fn debug_check_group(jobs: &[LandingJob]) {
    if !cfg!(debug_assertions) {
        return;
    }
    let mut parts: Vec<i32> = jobs.iter().map(|j| j.partition).collect();
    parts.sort_unstable();
    assert!(parts.windows(2).all(|w| w[0] != w[1]), "two batches of a partition in one group");
    for j in jobs {
        let r = j.ranges;
        assert!(r.lane_from <= r.lane_to && r.acct_from <= r.acct_to, "ranges {r:?}");
        let within = |s: &gantry_core::output::Source| match s.topic {
            gantry_core::output::Topic::LaneTx => (r.lane_from..r.lane_to).contains(&s.offset),
            gantry_core::output::Topic::AccountEvents => {
                (r.acct_from..r.acct_to).contains(&s.offset)
            }
        };
        let b = &j.batch;
        assert!(b.settlements.iter().all(|x| within(&x.source)), "a settlement outside {r:?}");
        assert!(b.ledger.iter().all(|x| within(&x.source)), "a ledger row outside {r:?}");
        assert!(b.rejects.iter().all(|x| within(&x.source)), "a reject outside {r:?}");
        assert!(b.status.iter().all(|x| within(&x.source)), "a status row outside {r:?}");
    }
}

/// Fails with [`crate::PipelineError::Fenced`] naming every partition of the group that
/// another instance has taken (a higher epoch than its job's). Called right before each
/// write of a landing, so an instance that lost a partition — paused past its session
/// timeout, cut off from the broker — writes nothing more for it.
async fn check_fences<I: Io>(shared: &Shared<I>, jobs: &[LandingJob]) -> crate::Result<()> {
    if crate::mutation::on("skip_fence_check") {
        return Ok(());
    }
    let partitions: Vec<u16> = jobs.iter().map(|j| j.partition as u16).collect();
    let epochs = shared.io.store().epochs(&partitions).await?;
    let lost: Vec<i32> = jobs
        .iter()
        .filter(|j| {
            let now = epochs.iter().find(|(p, _)| *p as i32 == j.partition).map_or(0, |e| e.1);
            now > j.epoch
        })
        .map(|j| j.partition)
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(crate::PipelineError::Fenced(lost))
    }
}

async fn try_land<I: Io>(
    shared: &Shared<I>,
    jobs: &[LandingJob],
    only_missing: OnlyMissing,
) -> crate::Result<()> {
    debug_check_group(jobs);
    for j in jobs {
        crate::tariffs::ensure_stored(shared, &j.tariffs).await?;
    }
    check_fences(shared, jobs).await?;
    let journal: Vec<JournalEntry> = jobs
        .iter()
        .map(|j| JournalEntry {
            partition: j.partition as u16,
            seq: j.seq,
            clock_ms: j.clock_ms,
            tariff_set: j.tariffs.id(),
            ranges: j.ranges,
            counts: j.batch.counts,
            late_known: j.late_known.clone(),
        })
        .collect();
    let store = shared.io.store();
    store.plan_batches(&journal, &shared.cfg.instance).await?;
    if crate::mutation::on("fence_before_wait") {
        check_fences(shared, jobs).await?;
    }
    if only_missing == OnlyMissing::Yes && !crate::mutation::on("retry_beside_running") {
        // An earlier attempt the client gave up on may still be running at the server; if it
        // finished between the presence check below and this attempt's INSERT, ClickHouse
        // would take the INSERT (its query id no longer running) and the table would hold
        // the batch twice. So no earlier attempt may be left before looking (found by the
        // simulator, seed 142) — and the fence is checked after this wait, not before it:
        // a pause inside it would otherwise sit between the check and the write (seed
        // 103743: a zombie woke up there and wrote a batch its successor had completed).
        for j in jobs {
            crate::worker::no_insert_running(store, j.partition).await?;
        }
    }
    if !crate::mutation::on("fence_before_wait") {
        check_fences(shared, jobs).await?;
    }
    let batches: Vec<BatchToWrite> = jobs
        .iter()
        .map(|j| BatchToWrite { partition: j.partition as u16, seq: j.seq, batch: &j.batch })
        .collect();
    store.write_batches(&batches, &shared.topics, only_missing).await?;
    let mut status: Vec<(String, String, i64)> = Vec::new();
    for j in jobs {
        for st in &j.batch.status {
            let card_id = j.batch.text(st.card_id);
            let time =
                gantry_core::time::format_timestamp(st.time_ms, shared.cfg.network_utc_offset_min);
            let message = gantry_kafka::StatusMessage {
                card_id,
                listed: st.listed,
                reason: st.reason.code(),
                time: &time,
            };
            status.push((card_id.to_string(), message.to_json(), st.time_ms));
        }
    }
    check_fences(shared, jobs).await?;
    shared.io.status().send_all(&status).await?;
    check_fences(shared, jobs).await?;
    store.commit_batches(&journal, &shared.cfg.instance).await?;
    Ok(())
}

fn record_latency<I: Io>(shared: &Shared<I>, batch: &Batch) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut h = shared.latency_ms.lock().expect("latency lock");
    for s in &batch.settlements {
        if let Some(ts) = s.source.timestamp_ms {
            h.saturating_record((now_ms - ts).clamp(1, 3_600_000) as u64);
        }
    }
}

/// Writes the engine state after batch `seq` of `partition`, whose ranges end at
/// `lane_next` / `acct_next`. Only ever after that batch is committed. A failed checkpoint
/// only lengthens the next replay.
pub(crate) async fn write_checkpoint<I: Io>(
    shared: &Shared<I>,
    partition: i32,
    seq: u64,
    (lane_next, acct_next): (i64, i64),
    state: Vec<u8>,
) {
    let rec = CheckpointRecord {
        gantry_partition: partition as u16,
        batch_seq: seq,
        lane_next,
        acct_next,
        state,
        written_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32),
    };
    if let Err(e) = shared.io.store().write_checkpoint(&rec).await {
        warn!(partition, seq, error = %e, "checkpoint not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches join a group in arrival order until the next would take a table past one
    /// part's rows; that one starts the next group. An oversized batch is a group alone.
    #[test]
    fn groups_stay_within_one_part_per_table() {
        let mut g = Group::new("a", 400_000);
        assert_eq!(g.offer("b", 400_000), None);
        assert_eq!(g.offer("c", 300_000), Some("c"), "1.1 M rows would be two parts");
        assert_eq!(g.offer("d", 200_000), None, "exactly the limit still fits");
        assert_eq!((g.jobs, g.rows), (vec!["a", "b", "d"], GROUP_ROWS_MAX));
        let mut big = Group::new("e", GROUP_ROWS_MAX + 1);
        assert_eq!(big.offer("f", 1), Some("f"));
        assert_eq!(big.jobs, ["e"]);
    }
}
