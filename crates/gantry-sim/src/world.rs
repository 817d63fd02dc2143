//! The simulated world: one broker (the input logs, the group's committed offsets, the
//! status-list topic), one store (every table Gantry writes, as row summaries tagged with
//! their batch), the faults in force, and the seeded PRNG every random choice comes from.
//!
//! [`SimIo`] is one instance's view of it, implementing the pipeline's `io` traits. The
//! store keeps the contract those traits state (`gantry_pipeline::io`): an INSERT is one
//! part — all of its rows or none, per table — and is run by a *server task* that outlives
//! the client: a crashed or impatient client leaves its INSERT running (visible to
//! `running_inserts` under its query id, killable), and a retry of the same query id is
//! refused while the first still runs. Faults drawn per call: an INSERT that fails before
//! it writes, one that writes and then reports failure, a client that gives up while the
//! server goes on. Outages fail every call while they last. A frozen (paused) instance
//! waits at the start of every *read* — a pause can fall anywhere except between a fence
//! check and the write right after it, which is the timing assumption ARCHITECTURE.md
//! states ("Fencing") — and its writes already on the wire go on at the server.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_clickhouse::{
    BatchRecord, BatchToWrite, CheckpointRecord, JournalEntry, OwnerRecord, Ownership, StoreError,
    TariffRecord, TariffSetRecord, TopicNames, PHASE_COMMITTED, PHASE_PLANNED,
};
use gantry_core::output::{Batch, Counts, Source, Topic};
use gantry_kafka::{KafkaIoError, RangeMessage, Tail};
use gantry_pipeline::io::{self, LogResult, OnlyMissing, StoreResult};
use rand::rngs::SmallRng;
use rand::Rng;
use tokio::time::Instant;

/// The wall clock at the simulation's start, ms since 1970 (2026-11-01T00:00Z): after every
/// generated record's time, so none is in the future.
pub const WALL_CLOCK_START_MS: i64 = 1_793_491_200_000;

/// How likely each drawn fault is, per call (parts per thousand).
#[derive(Clone, Copy, Debug)]
pub struct FaultRates {
    /// An INSERT fails before writing anything.
    pub insert_fails_before_permille: u32,
    /// An INSERT writes, then reports failure (a view failing after its source, a dropped
    /// connection after the server finished).
    pub insert_fails_after_permille: u32,
    /// The client gives up on an INSERT (a timeout) while the server goes on running it.
    pub client_gives_up_permille: u32,
    /// A status-list send fails (before or after the broker has the messages).
    pub status_fails_permille: u32,
    /// The instance pauses right at the start of a store read, past the session timeout:
    /// pauses placed by call rather than by time reach the narrow windows (a retry's wait
    /// between its fence check and its write, before that was mended).
    pub pause_at_read_permille: u32,
    /// The instance crashes right at a store call (the call never returns): a crash at
    /// that very await.
    pub crash_at_call_permille: u32,
}

/// Most faults drawn per call in one schedule (the liveness check needs a bounded budget).
pub const CALL_FAULTS_MAX: u32 = 4;

/// A fault a call drew, for the group to carry out.
#[derive(Clone, Copy, Debug)]
pub enum CallFault {
    /// The instance froze at a read; it wakes after the ms.
    Paused { instance: usize, ms: u64 },
    /// The instance crashed at a call (which hangs until its tasks are aborted).
    Crashed { instance: usize },
}

impl FaultRates {
    pub const NONE: FaultRates = FaultRates {
        insert_fails_before_permille: 0,
        insert_fails_after_permille: 0,
        client_gives_up_permille: 0,
        status_fails_permille: 0,
        pause_at_read_permille: 0,
        crash_at_call_permille: 0,
    };
}

/// One input message.
#[derive(Clone, Debug)]
pub struct LogMessage {
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
    /// First message of a producer batch: a fetch starting after it, inside the batch,
    /// meets the broker quirk (the next batch is returned) when that quirk is on.
    pub batch_start: bool,
}

/// A row as the checks need it: what it is and where it came from, without its tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Row {
    Settlement {
        source: (u8, i32, i64),
        trade_id: String,
        card: String,
        fee: i64,
        balance_after: i64,
    },
    Split {
        trade_id: String,
        unit: String,
        owner: String,
        fee: i64,
    },
    Ledger {
        source: (u8, i32, i64),
        card: String,
        entry_id: String,
        amount: i64,
        balance_after: i64,
    },
    Reject {
        source: (u8, i32, i64),
        reason: &'static str,
    },
    Duplicate {
        source: (u8, i32, i64),
        id: String,
    },
    Status {
        source: (u8, i32, i64),
        card: String,
        listed: bool,
    },
    Clearing {
        day: i32,
        owner: String,
        issuer: String,
        class: u8,
        medium: u8,
        n: u64,
        fee: i64,
    },
    Usage {
        day: i32,
        card: String,
        trips: u64,
        fee: i64,
        topups: u64,
        topup_amount: i64,
    },
    Card {
        card: String,
        customer: String,
        entries: u32,
        /// `(batch_row, balance)` of the card's last entry in the batch.
        last: (u32, i64),
    },
}

/// One batch's rows in one table, as one INSERT wrote them.
#[derive(Clone, Debug)]
pub struct Written {
    pub partition: u16,
    pub seq: u64,
    /// With each row its place in the batch's ledger (`batch_row`; 0 elsewhere).
    pub rows: Vec<(u32, Row)>,
    /// When the server wrote it (virtual ms).
    pub at_ms: i64,
}

/// The output tables, in `write_batches` order.
pub const TABLES: [&str; 9] = [
    "settlements",
    "splits",
    "ledger",
    "rejects",
    "duplicates",
    "status",
    "clearing",
    "usage",
    "cards",
];

fn src(s: &Source) -> (u8, i32, i64) {
    (matches!(s.topic, Topic::AccountEvents) as u8, s.partition, s.offset)
}

/// The rows `b` puts in table `t` (an index into [`TABLES`]).
fn rows_of(b: &Batch, t: usize) -> Vec<(u32, Row)> {
    let s = |x| b.text(x).to_string();
    match t {
        0 => b
            .settlements
            .iter()
            .map(|x| {
                (
                    0,
                    Row::Settlement {
                        source: src(&x.source),
                        trade_id: s(x.trade_id),
                        card: s(x.card_id),
                        fee: x.fee,
                        balance_after: x.balance_after,
                    },
                )
            })
            .collect(),
        1 => b
            .splits
            .iter()
            .map(|x| {
                (
                    0,
                    Row::Split {
                        trade_id: s(x.trade_id),
                        unit: s(x.interval_id),
                        owner: s(x.owner_id),
                        fee: x.fee,
                    },
                )
            })
            .collect(),
        2 => b
            .ledger
            .iter()
            .map(|x| {
                (
                    x.batch_row,
                    Row::Ledger {
                        source: src(&x.source),
                        card: s(x.card_id),
                        entry_id: s(x.entry_id),
                        amount: x.amount,
                        balance_after: x.balance_after,
                    },
                )
            })
            .collect(),
        3 => b
            .rejects
            .iter()
            .map(|x| (0, Row::Reject { source: src(&x.source), reason: x.reason }))
            .collect(),
        4 => b
            .duplicates
            .iter()
            .map(|x| (0, Row::Duplicate { source: src(&x.source), id: s(x.id) }))
            .collect(),
        5 => b
            .status
            .iter()
            .map(|x| {
                (0, Row::Status { source: src(&x.source), card: s(x.card_id), listed: x.listed })
            })
            .collect(),
        6 => b
            .clearing
            .iter()
            .map(|x| {
                (
                    0,
                    Row::Clearing {
                        day: x.trade_day,
                        owner: s(x.owner_id),
                        issuer: s(x.issuer_id),
                        class: x.vehicle_type,
                        medium: x.media_type,
                        n: x.n,
                        fee: x.fee,
                    },
                )
            })
            .collect(),
        8 => b
            .cards
            .iter()
            .map(|x| {
                (
                    0,
                    Row::Card {
                        card: s(x.card_id),
                        customer: s(x.customer_id),
                        entries: x.entries,
                        last: (x.last_row, x.balance_after),
                    },
                )
            })
            .collect(),
        _ => b
            .usage
            .iter()
            .map(|x| {
                (
                    0,
                    Row::Usage {
                        day: x.day,
                        card: s(x.card_id),
                        trips: x.trips,
                        fee: x.fee,
                        topups: x.topups,
                        topup_amount: x.topup_amount,
                    },
                )
            })
            .collect(),
    }
}

/// A query still running at the server.
struct Running {
    id: String,
    partitions: Vec<u16>,
    killed: bool,
}

/// Everything the store holds.
#[derive(Default)]
pub struct StoreState {
    pub owners: Vec<OwnerRecord>,
    pub journal: Vec<BatchRecord>,
    pub checkpoints: Vec<CheckpointRecord>,
    /// Per table, every INSERT's rows per batch.
    pub tables: BTreeMap<&'static str, Vec<Written>>,
    pub tariff_sets: Vec<TariffSetRecord>,
    pub tariffs: Vec<TariffRecord>,
    running: BTreeMap<u64, Running>,
    next_query: u64,
}

impl StoreState {
    /// The queries running at the server now: (id, killed).
    pub fn running_queries(&self) -> Vec<(String, bool)> {
        self.running.values().map(|r| (r.id.clone(), r.killed)).collect()
    }

    /// Whether `table` holds batch `seq` of `p`, as a replica `lag_ms` behind would say.
    fn holds(&self, table: &str, p: u16, seq: u64, now_ms: i64, lag_ms: i64) -> bool {
        self.tables.get(table).is_some_and(|w| {
            w.iter().any(|w| w.partition == p && w.seq == seq && w.at_ms <= now_ms - lag_ms)
        })
    }

    fn owner_of(&self, p: u16) -> Option<OwnerRecord> {
        self.owners
            .iter()
            .filter(|o| o.gantry_partition == p)
            .max_by(|a, b| (a.epoch, &a.instance).cmp(&(b.epoch, &b.instance)))
            .cloned()
    }
}

/// The broker's state.
#[derive(Default)]
pub struct BrokerState {
    /// `(topic index: 0 lane, 1 accounts, partition)` → messages by offset.
    pub logs: BTreeMap<(u8, i32), Vec<LogMessage>>,
    /// The group's committed next offsets per partition: (lane, accounts).
    pub committed: BTreeMap<i32, (i64, i64)>,
    /// What reached the status-list topic: (instance, card, message).
    pub status: Vec<(usize, String, String)>,
}

/// Faults in force now.
#[derive(Default)]
struct Conditions {
    store_down_until: Option<Instant>,
    broker_down_until: Option<Instant>,
}

/// The world every instance of one schedule shares.
pub struct World {
    pub rng: Mutex<SmallRng>,
    pub store: Mutex<StoreState>,
    pub broker: Mutex<BrokerState>,
    conditions: Mutex<Conditions>,
    pub rates: FaultRates,
    pub topics: TopicNames,
    /// Per instance: frozen (paused) now; its clock's offset from virtual time, ms.
    pub frozen: Mutex<Vec<bool>>,
    pub clock_offset_ms: Mutex<Vec<i64>>,
    /// Faults calls drew, not yet carried out by the group; how many were drawn.
    pub call_faults: Mutex<(Vec<CallFault>, u32)>,
    /// Set when the schedule is over: calls draw no more faults.
    pub quiet: std::sync::atomic::AtomicBool,
    started: Instant,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("World")
    }
}

impl World {
    pub fn new(
        rng: SmallRng,
        rates: FaultRates,
        topics: TopicNames,
        instances: usize,
    ) -> Arc<World> {
        Arc::new(World {
            rng: Mutex::new(rng),
            store: Mutex::default(),
            broker: Mutex::default(),
            conditions: Mutex::default(),
            rates,
            topics,
            frozen: Mutex::new(vec![false; instances]),
            clock_offset_ms: Mutex::new(vec![0; instances]),
            call_faults: Mutex::default(),
            quiet: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// A draw from the schedule's PRNG.
    pub fn draw(&self, range: std::ops::Range<u64>) -> u64 {
        self.rng.lock().expect("rng").gen_range(range)
    }

    fn chance(&self, permille: u32) -> bool {
        permille > 0 && self.draw(0..1000) < permille as u64
    }

    pub fn store_down_for(&self, d: Duration) {
        self.conditions.lock().expect("conditions").store_down_until = Some(Instant::now() + d);
    }

    pub fn broker_down_for(&self, d: Duration) {
        self.conditions.lock().expect("conditions").broker_down_until = Some(Instant::now() + d);
    }

    pub fn broker_up(&self) -> bool {
        let c = self.conditions.lock().expect("conditions");
        c.broker_down_until.is_none_or(|t| Instant::now() >= t)
    }

    fn store_up(&self) -> bool {
        let c = self.conditions.lock().expect("conditions");
        c.store_down_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Virtual ms since the start.
    pub fn elapsed_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }
}

fn unavailable(what: &str) -> StoreError {
    StoreError::Unavailable(what.to_string())
}

/// What a broker outage reports (the pipeline treats every broker error but a
/// configuration one as transient).
fn broker_down() -> KafkaIoError {
    KafkaIoError::RangeStalled { topic: "(outage)".into(), partition: -1, from: 0, to: 0, at: 0 }
}

/// One instance's view of the world.
#[derive(Clone)]
pub struct SimIo {
    pub world: Arc<World>,
    pub instance: usize,
}

/// How a drawn INSERT goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    FailsBefore,
    FailsAfter,
    ClientGivesUp,
}

impl SimIo {
    fn frozen(&self) -> bool {
        self.world.frozen.lock().expect("frozen")[self.instance]
    }

    /// A call's round trip: 1–20 ms.
    async fn latency(&self) {
        tokio::time::sleep(Duration::from_millis(self.world.draw(1..21))).await;
    }

    /// Draws a fault of this call, within the schedule's budget.
    fn call_fault(&self, permille: u32) -> bool {
        if self.world.quiet.load(std::sync::atomic::Ordering::SeqCst)
            || !self.world.chance(permille)
        {
            return false;
        }
        let mut f = self.world.call_faults.lock().expect("call faults");
        if f.1 >= CALL_FAULTS_MAX {
            return false;
        }
        f.1 += 1;
        true
    }

    /// A crash at this call, if one is drawn: the call never returns (the group aborts
    /// every task of the instance at its next tick).
    async fn maybe_crash_here(&self) {
        if self.call_fault(self.world.rates.crash_at_call_permille) {
            let crashed = CallFault::Crashed { instance: self.instance };
            self.world.call_faults.lock().expect("call faults").0.push(crashed);
            std::future::pending::<()>().await;
        }
    }

    /// The start of a read: may crash or pause the instance here; waits while the instance
    /// is paused; fails in an outage.
    async fn read_gate(&self) -> StoreResult<()> {
        self.maybe_crash_here().await;
        if !self.frozen() && self.call_fault(self.world.rates.pause_at_read_permille) {
            self.world.frozen.lock().expect("frozen")[self.instance] = true;
            let ms = self.world.draw(1_200..4_000);
            let paused = CallFault::Paused { instance: self.instance, ms };
            self.world.call_faults.lock().expect("call faults").0.push(paused);
        }
        while self.frozen() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.latency().await;
        if !self.world.store_up() {
            return Err(unavailable("outage"));
        }
        Ok(())
    }

    fn fate(&self) -> Fate {
        let r = self.world.rates;
        let x = self.world.draw(0..1000) as u32;
        let (a, b, c) = (
            r.insert_fails_before_permille,
            r.insert_fails_before_permille + r.insert_fails_after_permille,
            r.insert_fails_before_permille
                + r.insert_fails_after_permille
                + r.client_gives_up_permille,
        );
        match x {
            x if x < a => Fate::FailsBefore,
            x if x < b => Fate::FailsAfter,
            x if x < c => Fate::ClientGivesUp,
            _ => Fate::Normal,
        }
    }

    /// One INSERT with query id `id` naming `partitions`: run by a server task that writes
    /// with `apply` (all at once) unless killed first; see the module doc for its faults.
    async fn insert(
        &self,
        id: String,
        partitions: Vec<u16>,
        apply: impl FnOnce(&mut StoreState) + Send + 'static,
    ) -> StoreResult<()> {
        self.maybe_crash_here().await;
        self.latency().await;
        if !self.world.store_up() {
            return Err(unavailable("outage"));
        }
        let fate = self.fate();
        let n = {
            let mut st = self.world.store.lock().expect("store");
            if st.running.values().any(|r| r.id == id) {
                return Err(unavailable("query id is still running"));
            }
            st.next_query += 1;
            let n = st.next_query;
            st.running.insert(n, Running { id, partitions, killed: false });
            n
        };
        let server_ms = match fate {
            Fate::ClientGivesUp => self.world.draw(200..3000),
            _ => self.world.draw(1..30),
        };
        let world = self.world.clone();
        let writes = fate != Fate::FailsBefore;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(server_ms)).await;
            let mut st = world.store.lock().expect("store");
            let killed = st.running.remove(&n).is_none_or(|r| r.killed);
            let wrote = writes && !killed;
            if wrote {
                apply(&mut st);
            }
            let _ = done_tx.send(wrote);
        });
        if fate == Fate::ClientGivesUp {
            tokio::time::sleep(Duration::from_millis(self.world.draw(50..200))).await;
            return Err(unavailable("timed out (the server goes on)"));
        }
        match done_rx.await {
            Ok(true) if fate == Fate::Normal => Ok(()),
            Ok(true) => Err(unavailable("failed after writing")),
            _ => Err(unavailable("failed")),
        }
    }
}

impl io::Io for SimIo {
    type Store = SimIo;
    type Reader = SimIo;
    type Status = SimIo;
    fn store(&self) -> &SimIo {
        self
    }
    fn status(&self) -> &SimIo {
        self
    }
    fn reader(&self) -> LogResult<SimIo> {
        Ok(self.clone())
    }
    fn wall_clock_ms(&self) -> i64 {
        let offset = self.world.clock_offset_ms.lock().expect("clock")[self.instance];
        WALL_CLOCK_START_MS + self.world.elapsed_ms() + offset
    }
}

fn query_id(table: &str, batches: impl Iterator<Item = (u16, u64)>) -> String {
    let mut id = table.to_string();
    for (p, k) in batches {
        id.push_str(&format!("|{p}.{k}"));
    }
    id
}

impl io::Store for SimIo {
    async fn take_ownership(&self, p: u16, instance: &str) -> StoreResult<Option<Ownership>> {
        self.read_gate().await?;
        let previous = self.world.store.lock().expect("store").owner_of(p);
        let epoch = previous.as_ref().map_or(1, |o| o.epoch + 1);
        let row =
            OwnerRecord { gantry_partition: p, epoch, instance: instance.to_string(), taken_at: 0 };
        let id = format!("owners|{p}.{epoch}|{instance}");
        self.insert(id, vec![], move |st| st.owners.push(row)).await?;
        self.read_gate().await?;
        let now = self.world.store.lock().expect("store").owner_of(p);
        Ok(now
            .filter(|o| o.epoch == epoch && o.instance == instance)
            .map(|o| Ownership { epoch: o.epoch, previous: previous.map(|p| p.instance) }))
    }

    async fn epochs(&self, partitions: &[u16]) -> StoreResult<Vec<(u16, u64)>> {
        self.read_gate().await?;
        let st = self.world.store.lock().expect("store");
        Ok(partitions.iter().filter_map(|&p| st.owner_of(p).map(|o| (p, o.epoch))).collect())
    }

    async fn running_inserts(&self, p: u16) -> StoreResult<u64> {
        self.read_gate().await?;
        let st = self.world.store.lock().expect("store");
        Ok(st.running.values().filter(|r| r.partitions.contains(&p)).count() as u64)
    }

    async fn kill_running_inserts(&self, p: u16) -> StoreResult<()> {
        self.read_gate().await?;
        let mut st = self.world.store.lock().expect("store");
        for r in st.running.values_mut().filter(|r| r.partitions.contains(&p)) {
            r.killed = true;
        }
        Ok(())
    }

    async fn latest_checkpoint(&self, p: u16) -> StoreResult<Option<CheckpointRecord>> {
        self.read_gate().await?;
        let st = self.world.store.lock().expect("store");
        Ok(st
            .checkpoints
            .iter()
            .filter(|c| c.gantry_partition == p)
            .max_by_key(|c| c.batch_seq)
            .cloned())
    }

    async fn write_checkpoint(&self, c: &CheckpointRecord) -> StoreResult<()> {
        let c = c.clone();
        let id = format!("checkpoints|{}.{}", c.gantry_partition, c.batch_seq);
        self.insert(id, vec![c.gantry_partition], move |st| st.checkpoints.push(c)).await
    }

    async fn batches_after(&self, p: u16, seq: u64) -> StoreResult<Vec<BatchRecord>> {
        self.read_gate().await?;
        let st = self.world.store.lock().expect("store");
        let mut rows: Vec<&BatchRecord> =
            st.journal.iter().filter(|b| b.gantry_partition == p && b.batch_seq > seq).collect();
        rows.sort_by_key(|b| (b.batch_seq, b.phase == PHASE_COMMITTED));
        let mut out: Vec<BatchRecord> = Vec::new();
        for r in rows {
            match out.last_mut() {
                Some(last) if last.batch_seq == r.batch_seq => *last = r.clone(),
                _ => out.push(r.clone()),
            }
        }
        Ok(out)
    }

    async fn plan_batches(&self, batches: &[JournalEntry], instance: &str) -> StoreResult<()> {
        let planned = Counts::default();
        let rows: Vec<BatchRecord> = batches
            .iter()
            .map(|b| gantry_clickhouse::Store::batch_record(b, PHASE_PLANNED, &planned, instance))
            .collect();
        self.journal_insert(PHASE_PLANNED, batches, rows).await
    }

    async fn commit_batches(&self, batches: &[JournalEntry], instance: &str) -> StoreResult<()> {
        let rows: Vec<BatchRecord> = batches
            .iter()
            .map(|b| {
                gantry_clickhouse::Store::batch_record(b, PHASE_COMMITTED, &b.counts, instance)
            })
            .collect();
        self.journal_insert(PHASE_COMMITTED, batches, rows).await
    }

    async fn write_batches(
        &self,
        batches: &[BatchToWrite<'_>],
        _topics: &TopicNames,
        only_missing: OnlyMissing,
    ) -> StoreResult<()> {
        // The mutation "lagging_presence": presence read on a replica 2 s behind.
        let lag_ms = if gantry_pipeline::mutation::on("lagging_presence") { 2_000 } else { 0 };
        for (t, table) in TABLES.iter().enumerate() {
            let now_ms = self.world.elapsed_ms();
            let written: Vec<Written> = {
                let st = self.world.store.lock().expect("store");
                batches
                    .iter()
                    .filter(|b| {
                        only_missing == OnlyMissing::No
                            || !st.holds(table, b.partition, b.seq, now_ms, lag_ms)
                    })
                    .map(|b| Written {
                        partition: b.partition,
                        seq: b.seq,
                        rows: rows_of(b.batch, t),
                        at_ms: 0,
                    })
                    .filter(|w| !w.rows.is_empty())
                    .collect()
            };
            if written.is_empty() {
                continue;
            }
            let id = query_id(table, written.iter().map(|w| (w.partition, w.seq)));
            let parts = written.iter().map(|w| w.partition).collect();
            let world = self.world.clone();
            self.insert(id, parts, move |st| {
                let at_ms = world.elapsed_ms();
                let written = written.into_iter().map(|w| Written { at_ms, ..w });
                st.tables.entry(table).or_default().extend(written)
            })
            .await?;
        }
        Ok(())
    }

    async fn settled_trade_ids(&self, p: u16, ids: &[(i32, &str)]) -> StoreResult<HashSet<String>> {
        self.read_gate().await?;
        let wanted: HashSet<&str> = ids.iter().map(|(_, id)| *id).collect();
        let st = self.world.store.lock().expect("store");
        let mut found = HashSet::new();
        for w in st.tables.get("settlements").into_iter().flatten().filter(|w| w.partition == p) {
            for (_, r) in &w.rows {
                if let Row::Settlement { trade_id, .. } = r {
                    if wanted.contains(trade_id.as_str()) {
                        found.insert(trade_id.clone());
                    }
                }
            }
        }
        Ok(found)
    }

    async fn store_tariff_set(
        &self,
        set: &TariffSetRecord,
        versions: &[TariffRecord],
    ) -> StoreResult<()> {
        let (set, versions) = (set.clone(), versions.to_vec());
        let id = format!("tariffs|{}", set.set_id);
        self.insert(id, vec![], move |st| {
            st.tariffs.extend(versions);
            st.tariff_sets.push(set);
        })
        .await
    }

    async fn tariff_set(&self, set_id: u64) -> StoreResult<Option<TariffSetRecord>> {
        self.read_gate().await?;
        let st = self.world.store.lock().expect("store");
        Ok(st.tariff_sets.iter().find(|s| s.set_id == set_id).cloned())
    }

    async fn tariffs_by_hash(&self, hashes: &[u64]) -> StoreResult<Vec<TariffRecord>> {
        self.read_gate().await?;
        let st = self.world.store.lock().expect("store");
        Ok(st.tariffs.iter().filter(|t| hashes.contains(&t.source_hash)).cloned().collect())
    }

    async fn tariff_hashes_named(&self, names: &[String]) -> StoreResult<Vec<(String, u64)>> {
        self.read_gate().await?;
        let st = self.world.store.lock().expect("store");
        Ok(st
            .tariffs
            .iter()
            .filter(|t| names.contains(&t.version))
            .map(|t| (t.version.clone(), t.source_hash))
            .collect())
    }
}

impl SimIo {
    async fn journal_insert(
        &self,
        phase: &str,
        batches: &[JournalEntry],
        rows: Vec<BatchRecord>,
    ) -> StoreResult<()> {
        let id =
            query_id(&format!("batches:{phase}"), batches.iter().map(|b| (b.partition, b.seq)));
        let parts = batches.iter().map(|b| b.partition).collect();
        self.insert(id, parts, move |st| st.journal.extend(rows)).await
    }

    fn log_gate(&self) -> LogResult<()> {
        if self.world.broker_up() {
            Ok(())
        } else {
            Err(broker_down())
        }
    }

    fn topic_index(&self, topic: &str) -> u8 {
        (topic == self.world.topics.account_events) as u8
    }
}

impl SimIo {
    /// Hands `f` the messages of `[from, to)` the log holds; returns the log's length.
    fn each_message(
        &self,
        topic: &str,
        p: i32,
        (from, to): (i64, i64),
        mut f: impl FnMut(RangeMessage<'_>),
    ) -> LogResult<usize> {
        self.log_gate()?;
        let b = self.world.broker.lock().expect("broker");
        let log = b.logs.get(&(self.topic_index(topic), p)).map_or(&[][..], |l| &l[..]);
        let (from, to) = (from.max(0) as usize, (to.max(0) as usize).min(log.len()));
        for (i, m) in log.iter().enumerate().take(to).skip(from) {
            let timestamp_ms = Some(m.timestamp_ms);
            f(RangeMessage { offset: i as i64, timestamp_ms, payload: &m.payload });
        }
        Ok(log.len())
    }
}

impl io::Reader for SimIo {
    fn low_watermark(&self, _topic: &str, _p: i32) -> LogResult<i64> {
        self.log_gate()?;
        Ok(0)
    }

    fn read(
        &self,
        topic: &str,
        p: i32,
        from: i64,
        to: i64,
        f: impl FnMut(RangeMessage<'_>),
    ) -> LogResult<()> {
        self.each_message(topic, p, (from, to), f).map(|_| ())
    }

    fn read_tail(
        &self,
        topic: &str,
        p: i32,
        from: i64,
        max: usize,
        f: impl FnMut(RangeMessage<'_>),
    ) -> LogResult<Tail> {
        let to = from.max(0) + max as i64;
        let len = self.each_message(topic, p, (from, to), f)? as i64;
        Ok(if to >= len { Tail::AtEnd } else { Tail::More })
    }
}

impl io::StatusSink for SimIo {
    async fn send_all(&self, msgs: &[(String, String, i64)]) -> LogResult<()> {
        self.latency().await;
        self.log_gate()?;
        let fails = self.world.chance(self.world.rates.status_fails_permille);
        if fails && self.world.draw(0..2) == 0 {
            return Err(broker_down());
        }
        let mut b = self.world.broker.lock().expect("broker");
        b.status.extend(msgs.iter().map(|(k, v, _)| (self.instance, k.clone(), v.clone())));
        if fails {
            return Err(broker_down());
        }
        Ok(())
    }
}
