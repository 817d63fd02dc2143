//! One instance's workers and lander, whatever assigns partitions and delivers messages.
//!
//! Production's group consumer (`poller.rs`, over `rdkafka`) and the deterministic
//! simulator (`crates/gantry-sim`) both run partitions through this: [`Instance::start`]
//! builds what the workers share and spawns the lander; [`Instance::spawn_worker`] runs a
//! partition's worker — ownership and fencing, recovery with backoff, then the live loop —
//! fed through its bounded channel of [`Chunk`]s; closing that channel is the revocation
//! (the worker lands what it holds and stops). Landed batches come back as
//! [`CommitRequest`]s, for the driver to commit to the group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_core::output::Topic;
use gantry_core::TariffStore;
use tokio::sync::mpsc;
use tracing::warn;

use crate::io::Io;
use crate::worker::{Chunk, CommitRequest, Worker};
use crate::{PipelineConfig, Result, Shared};

/// Upper bound of the latency histogram, ms: an hour, far beyond any healthy lag; a record
/// older than that counts as an hour.
pub(crate) const LATENCY_MAX_MS: u64 = 3_600_000;

/// The first wait before a failed recovery is tried again: a blip costs half a second.
pub(crate) const RECOVERY_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between recovery attempts: an outage's end is noticed within seconds.
pub(crate) const RECOVERY_RETRY_MAX: Duration = Duration::from_secs(5);

/// A running instance: what its workers share, and where landed batches are reported.
pub struct Instance<I: Io> {
    pub(crate) shared: Arc<Shared<I>>,
    commits: Mutex<std_mpsc::Sender<CommitRequest>>,
    lander: tokio::task::JoinHandle<()>,
}

/// A partition's worker, as its driver holds it.
pub struct WorkerHandle {
    /// Its input; dropping every sender revokes the partition.
    pub tx: mpsc::Sender<Chunk>,
    /// Ends when the worker has landed what it held (or failed).
    pub done: tokio::task::JoinHandle<Result<()>>,
    /// Set once the partition is recovered.
    pub recovered: Arc<AtomicBool>,
}

impl<I: Io> Instance<I> {
    /// Builds the shared pieces and spawns the lander on `rt`; landed batches' offsets come
    /// out of the receiver.
    pub fn start(
        cfg: &PipelineConfig,
        tariffs: Arc<TariffStore>,
        io: I,
        rt: &tokio::runtime::Handle,
    ) -> (Instance<I>, std_mpsc::Receiver<CommitRequest>) {
        let latency_ms = Mutex::new(
            hdrhistogram::Histogram::new_with_bounds(1, LATENCY_MAX_MS, 3)
                .expect("histogram bounds"),
        );
        let (lander_tx, lander_rx) = mpsc::channel(crate::land::LANDER_QUEUE_JOBS);
        let shared = Arc::new(Shared {
            topics: cfg.topics(),
            cfg: cfg.clone(),
            tariffs,
            io,
            latency_ms,
            chunk_pool: crate::ChunkPool::new(),
            lander: lander_tx,
            stored_sets: Mutex::new(std::collections::HashSet::new()),
        });
        let (commit_tx, commit_rx) = std_mpsc::channel();
        let lander = rt.spawn(crate::land::lander(shared.clone(), lander_rx, commit_tx.clone()));
        (Instance { shared, commits: Mutex::new(commit_tx), lander }, commit_rx)
    }

    /// Fails with [`PipelineError::TariffChanged`] if a published version's files differ
    /// from what was stored under its name (checked at start).
    pub async fn check_tariffs_unchanged(&self) -> Result<()> {
        let set = self.shared.tariffs.snapshot();
        crate::tariffs::check_unchanged(self.shared.io.store(), &set).await
    }

    /// Starts partition `p`'s worker on `rt`: it takes the partition, recovers it (retrying
    /// what may pass) and then processes what its channel brings.
    pub fn spawn_worker(&self, p: i32, rt: &tokio::runtime::Handle) -> WorkerHandle {
        let (tx, rx) = mpsc::channel(self.shared.cfg.channel_chunks_max);
        let shared = self.shared.clone();
        let commits = self.commits.lock().expect("commits lock").clone();
        let recovered = Arc::new(AtomicBool::new(false));
        let flag = recovered.clone();
        let done = rt.spawn(async move {
            let Some(w) = recover_with_backoff(shared, p, commits, &rx).await? else {
                return Ok(()); // revoked or stopping before it could recover
            };
            flag.store(true, Ordering::SeqCst);
            w.run(rx).await
        });
        WorkerHandle { tx, done, recovered }
    }

    /// An empty chunk of `topic` to fill and send to a worker (buffers are reused).
    pub fn chunk(&self, topic: Topic) -> Chunk {
        self.shared.chunk_pool.take(topic)
    }

    /// An empty chunk telling a worker that its partition of `topic` is at its end.
    pub fn at_end(&self, topic: Topic) -> Chunk {
        let mut c = self.chunk(topic);
        c.at_end = true;
        c
    }

    /// A chunk that was not sent after all.
    pub fn give_back(&self, chunk: Chunk) {
        self.shared.chunk_pool.give_back(chunk);
    }

    /// Stops the lander where it is, as a crash of the process would (the simulator's
    /// crashes; it aborts the workers through their handles). Nothing is cleaned up.
    pub fn crash(&self) {
        self.lander.abort();
    }

    /// The configuration the instance runs with.
    pub fn config(&self) -> &PipelineConfig {
        &self.shared.cfg
    }

    /// Kafka timestamp → landed, per settled record so far, ms.
    pub fn latency_ms(&self) -> hdrhistogram::Histogram<u64> {
        self.shared.latency_ms.lock().expect("latency lock").clone()
    }
}

/// Recovers partition `p`, waiting out what may pass — ClickHouse or the broker unreachable,
/// the schema not there yet — with backoff, instead of failing the instance: an outage at
/// start or at assignment only delays the partition. A journal that does not replay (or a
/// checkpoint that does not decode) is not transient and fails it. `None` if the partition
/// is revoked (or the instance stops) first: nothing was written, so nothing is lost.
async fn recover_with_backoff<I: Io>(
    shared: Arc<Shared<I>>,
    p: i32,
    commits: std_mpsc::Sender<CommitRequest>,
    rx: &mpsc::Receiver<Chunk>,
) -> Result<Option<Worker<I>>> {
    let mut backoff = RECOVERY_RETRY_FIRST;
    loop {
        // Revoked meanwhile: taking the partition now would only fence its new owner.
        if rx.is_closed() {
            return Ok(None);
        }
        match Worker::recover(shared.clone(), p, commits.clone()).await {
            Ok(w) => return Ok(Some(w)),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                warn!(partition = p, error = %e, retry_in_ms = backoff.as_millis() as u64, "partition not recovered; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECOVERY_RETRY_MAX);
    }
}
