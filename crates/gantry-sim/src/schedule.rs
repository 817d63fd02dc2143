//! One schedule: a seed becomes traffic, a configuration and a plan of faults; the
//! pipeline's real workers and lander run it against the simulated world on a paused tokio
//! clock, driven by a simulated group (assignment by ranges, eager rebalances, session
//! timeouts, fetches, offset commits) until every input message is in a committed batch.
//!
//! Everything random comes from the seed: the plan, and every draw the world makes during
//! the run (latencies, failed INSERTs). The runtime is single-threaded with a paused clock
//! and the pipeline's `select!`s are biased, so a seed replays the same run, event by event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_clickhouse::TopicNames;
use gantry_core::output::Topic;
use gantry_core::{TariffSet, TariffStore};
use gantry_gen::{Network, Traffic, TrafficConfig};
use gantry_pipeline::instance::{Instance, WorkerHandle};
use gantry_pipeline::{CommitRequest, PipelineConfig, PipelineError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::world::{CallFault, FaultRates, LogMessage, SimIo, World};

/// How often the simulated group polls, fetches and commits, ms of virtual time.
const TICK_MS: u64 = 10;
/// The longest a schedule may run (virtual) after its last fault before it counts as
/// stalled: far beyond any backoff (5 s), session timeout and replay of the traffic.
const STALL_AFTER_MS: i64 = 300_000;
/// Virtual time left after the end for INSERTs still running at the server (a given-up
/// client's run up to 3 s) to finish before the tables are checked.
const SETTLE_MS: u64 = 5_000;

/// A fault the plan schedules at a virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The instance's process dies at whatever await its tasks are at; it is restarted
    /// after the given ms (no earlier than its old member's session times out).
    Crash { instance: usize, restart_after_ms: u64 },
    /// The instance stops for the given ms (a GC pause, SIGSTOP): past the session timeout
    /// it loses its partitions and wakes up as a zombie.
    Pause { instance: usize, ms: u64 },
    /// Every store call fails for the given ms.
    StoreOutage { ms: u64 },
    /// Every broker call fails and nothing is fetched for the given ms.
    BrokerOutage { ms: u64 },
    /// The instance's wall clock steps forward by the given ms.
    ClockJump { instance: usize, ms: u64 },
    /// The instance stops gracefully (revokes, lands, leaves the group) and starts again
    /// after the given ms: a rebalance both ways.
    Leave { instance: usize, back_after_ms: u64 },
}

/// What a seed decides.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub partitions: i32,
    pub instances: usize,
    pub cards: usize,
    pub records: u64,
    /// Over how long the input arrives, ms.
    pub input_span_ms: u64,
    pub batch_rows_max: usize,
    pub flush_interval_ms: u64,
    pub checkpoint_every_batches: u64,
    /// How long a lane record waits for a silent account side. Mostly [`MERGE_IDLE_NEVER_MS`]
    /// (with all input there from the start, the order is then the input's whatever the
    /// faults, and the output must equal the crash-free run's); otherwise short, so the give-up and the direct read
    /// of a silent side are exercised too (and the order may then depend on timing).
    pub merge_idle_ms: u64,
    /// When a second tariff version (in force from the traffic day's noon, other discounts)
    /// is published, virtual ms: what is settled after that is priced with it, and every
    /// replay must price each batch with the set it was journaled with. The order of
    /// publishing and processing follows timing, so such a plan is not compared with its
    /// crash-free run.
    pub tariff_published_at_ms: Option<u64>,
    /// Fetches that start inside a producer batch get the next batch (Tansu 0.6).
    pub fetch_skips_into_batch: bool,
    pub rates: FaultRates,
    pub faults: Vec<(u64, Fault)>,
}

impl Plan {
    /// The plan of `seed`; `with_faults: false` gives the same input and configuration with
    /// no fault at all (the reference run).
    pub fn of(seed: u64, with_faults: bool) -> Plan {
        let mut r = SmallRng::seed_from_u64(seed ^ 0x005e_ed0f_9a27);
        let partitions = r.gen_range(1..=3);
        let instances = r.gen_range(1..=3);
        let records = r.gen_range(100..400);
        // Mostly all input is there from the start: the merge then takes every message in
        // timestamp order whatever the timing (a side is at its end only when it is done),
        // so the output must equal the crash-free run's. Input arriving while the
        // pipeline runs lets a side reach its end mid-batch, which closes it for that batch
        // (ARCHITECTURE.md, "Merge order"): the order then follows the batch boundaries,
        // which follow timing, and only the invariants are checked.
        let input_span_ms = if r.gen_bool(0.6) { 0 } else { r.gen_range(1..3_000) };
        let mut plan = Plan {
            seed,
            partitions,
            instances,
            cards: r.gen_range(20..80),
            records,
            input_span_ms,
            batch_rows_max: r.gen_range(20..400),
            flush_interval_ms: r.gen_range(20..300),
            checkpoint_every_batches: r.gen_range(1..6),
            merge_idle_ms: MERGE_IDLE_NEVER_MS,
            fetch_skips_into_batch: r.gen_bool(0.3),
            // From a stream of its own, so that adding it changed no other draw (the seeds
            // kept as regression cases still make the schedules that found their bugs).
            tariff_published_at_ms: {
                let mut t = SmallRng::seed_from_u64(seed ^ 0x7a41_ff00);
                t.gen_bool(0.2).then(|| t.gen_range(0..4_000))
            },
            rates: FaultRates::NONE,
            faults: Vec::new(),
        };
        // A fetch the quirk answers with nothing leaves that side silent until the merge
        // wait passes and the worker reads it directly: the wait must pass then.
        if plan.fetch_skips_into_batch || r.gen_bool(0.25) {
            plan.merge_idle_ms = r.gen_range(100..1_000);
        }
        if !with_faults {
            return plan;
        }
        plan.rates = FaultRates {
            insert_fails_before_permille: r.gen_range(0..60),
            insert_fails_after_permille: r.gen_range(0..60),
            client_gives_up_permille: r.gen_range(0..40),
            status_fails_permille: r.gen_range(0..60),
            pause_at_read_permille: 0,
            crash_at_call_permille: 0,
        };
        // From a stream of their own, so that adding them changed no other draw.
        let mut c = SmallRng::seed_from_u64(seed ^ 0x00ca_11f0);
        if c.gen_bool(0.5) {
            plan.rates.pause_at_read_permille = c.gen_range(0..8);
            plan.rates.crash_at_call_permille = c.gen_range(0..4);
        }
        let n = r.gen_range(0..7);
        let horizon = input_span_ms + 3_000;
        for _ in 0..n {
            let at = r.gen_range(0..horizon);
            let instance = r.gen_range(0..instances);
            let f = match r.gen_range(0..6) {
                0 => Fault::Crash { instance, restart_after_ms: r.gen_range(0..3_000) },
                1 => Fault::Pause { instance, ms: r.gen_range(100..4_000) },
                2 => Fault::StoreOutage { ms: r.gen_range(100..8_000) },
                3 => Fault::BrokerOutage { ms: r.gen_range(100..5_000) },
                4 => Fault::ClockJump { instance, ms: r.gen_range(1..120_000) },
                _ => Fault::Leave { instance, back_after_ms: r.gen_range(0..2_000) },
            };
            plan.faults.push((at, f));
        }
        plan.faults.sort_by_key(|(at, _)| *at);
        plan
    }

    fn config(&self, instance: usize) -> PipelineConfig {
        PipelineConfig {
            instance: format!("sim-{instance}"),
            batch_rows_max: self.batch_rows_max,
            flush_interval_ms: self.flush_interval_ms,
            checkpoint_every_batches: self.checkpoint_every_batches,
            merge_idle_ms: self.merge_idle_ms,
            channel_chunks_max: 4,
            chunk_messages_max: 32,
            session_timeout_ms: SESSION_TIMEOUT_MS,
            fence_grace_ms: 300,
            dedup_expected_ids: 0,
            ..PipelineConfig::default()
        }
    }
}

/// A merge wait longer than any schedule's faults: it never passes.
pub const MERGE_IDLE_NEVER_MS: u64 = 3_600_000;

/// The simulated group's session timeout: a crashed or paused member holds its partitions
/// this long.
const SESSION_TIMEOUT_MS: u64 = 1_000;

/// The input of a schedule, generated once per plan.
pub struct Input {
    /// Per message: when it is produced (virtual ms), its topic and partition, and it.
    pub messages: Vec<(u64, u8, i32, LogMessage)>,
    pub tariffs: TariffSet,
    /// The set published at `Plan::tariff_published_at_ms`: the first version and a second.
    pub later_tariffs: TariffSet,
}

impl Input {
    pub fn of(plan: &Plan) -> Input {
        let net = Network::new(plan.seed, 40, 5);
        let cfg = TrafficConfig {
            seed: plan.seed,
            cards: plan.cards,
            records: plan.records,
            days: 1,
            ..TrafficConfig::default()
        };
        let mut traffic = Traffic::new(cfg, &net);
        let mut r = SmallRng::seed_from_u64(plan.seed ^ 0x1a9e);
        let mut raw = Vec::new();
        while let Some(m) = traffic.next_message() {
            let t = matches!(m.topic, gantry_gen::Topic::AccountEvents) as u8;
            let p = (fnv1a(m.key) % plan.partitions as u64) as i32;
            raw.push((t, p, m.timestamp_ms, m.value.to_vec()));
        }
        // Produced in Kafka-timestamp order across both topics (account events first on a
        // tie, as the merge takes them), as lanes and the account system publish in real
        // time: then a side at its end holds nothing older than the other side's head, and
        // the merge's order is the input's, however fetches are timed.
        raw.sort_by_key(|(t, _, ts, _)| (*ts, 1 - *t));
        let n = raw.len().max(1) as u64;
        let mut batch_left: BTreeMap<(u8, i32), u32> = BTreeMap::new();
        let messages = raw
            .into_iter()
            .enumerate()
            .map(|(i, (t, p, ts, payload))| {
                let left = batch_left.entry((t, p)).or_insert(0);
                let batch_start = *left == 0;
                *left = if batch_start { r.gen_range(0..5) } else { *left - 1 };
                let at = i as u64 * plan.input_span_ms / n;
                (at, t, p, LogMessage { timestamp_ms: ts, payload, batch_start })
            })
            .collect();
        let v = net.tariff_version().expect("generated tariff");
        let toml = net
            .tariff_toml()
            .replace("32-20260101-001", "32-20260928-002")
            .replace("2026-01-01T00:00:00+08:00", "2026-09-28T12:00:00+08:00")
            .replace("etc_discount_bp = 500", "etc_discount_bp = 900");
        let (toml_path, csv_path) =
            (std::path::Path::new("tariff.toml"), std::path::Path::new("intervals.csv"));
        let csv = net.intervals_csv();
        let v2 = gantry_core::tariff::TariffVersion::from_sources(
            toml_path,
            &toml,
            csv_path,
            &csv,
            gantry_gen::OFFSET_MIN,
        )
        .expect("second generated tariff");
        Input {
            messages,
            tariffs: TariffSet::of([v.clone()]).expect("one version"),
            later_tariffs: TariffSet::of([v, v2]).expect("two versions"),
        }
    }
}

/// Kafka-like key partitioning (any fixed hash does: both topics use the same).
fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// A partition as a running member holds it.
struct Held {
    worker: WorkerHandle,
    /// Next fetch offset per topic (lane, accounts).
    pos: [i64; 2],
    /// The worker was told the side is at its end, at the current position.
    told_end: [bool; 2],
    /// Something of each side was fetched since the assignment (the quirk hits the first).
    fetched: [bool; 2],
}

/// A running incarnation of an instance.
struct Process {
    instance: Instance<SimIo>,
    commits: std::sync::mpsc::Receiver<CommitRequest>,
    held: BTreeMap<i32, Held>,
    /// Workers revoked and landing what they hold.
    /// Workers revoked (their channel closed) and landing what they hold.
    revoking: Vec<(i32, Done)>,
}

/// One instance of the group.
struct Member {
    process: Option<Process>,
    /// The group counts it (running, or dead/paused but not timed out yet).
    in_group: bool,
    /// Since when it is dead or paused (virtual ms), for its session timeout.
    silent_since: Option<i64>,
    paused_until: Option<i64>,
    start_at: Option<i64>,
    /// Lost its partitions while paused: on waking it is revoked and exits.
    zombie: bool,
}

/// How a schedule ended.
#[derive(Debug)]
pub struct Outcome {
    pub world: Arc<World>,
    pub trace: Vec<String>,
    /// Errors that only a bug explains (a journal that does not replay, …).
    pub failures: Vec<String>,
    pub stalled: bool,
    pub virtual_ms: i64,
}

/// The group and its members while a schedule runs.
struct Group {
    plan: Plan,
    world: Arc<World>,
    tariffs: Arc<TariffStore>,
    members: Vec<Member>,
    /// Who owns each partition now (an index into `members`).
    owner: BTreeMap<i32, usize>,
    trace: Vec<String>,
    failures: Vec<String>,
}

/// Runs `plan` over `input` to the end; see the module doc.
pub fn run(plan: &Plan, input: &Input) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run_async(plan.clone(), input))
}

async fn run_async(plan: Plan, input: &Input) -> Outcome {
    let topics = TopicNames {
        lane_tx: PipelineConfig::default().lane_topic,
        account_events: PipelineConfig::default().account_topic,
        plates: None,
    };
    let rng = SmallRng::seed_from_u64(plan.seed);
    let world = World::new(rng, plan.rates, topics, plan.instances);
    let mut g = Group {
        tariffs: Arc::new(TariffStore::new(input.tariffs.clone())),
        members: (0..plan.instances)
            .map(|_| Member {
                process: None,
                in_group: false,
                silent_since: None,
                paused_until: None,
                start_at: Some(0),
                zombie: false,
            })
            .collect(),
        owner: BTreeMap::new(),
        trace: Vec::new(),
        failures: Vec::new(),
        world: world.clone(),
        plan,
    };
    let last_fault = g.plan.faults.last().map_or(0, |(at, _)| *at as i64);
    let mut faults = g.plan.faults.clone().into_iter().peekable();
    let mut produced = 0;
    let mut stalled = false;
    let mut published = false;
    loop {
        let now = world.elapsed_ms();
        while let Some((at, f)) = faults.peek().copied() {
            if at as i64 > now {
                break;
            }
            faults.next();
            g.fault(now, f);
        }
        produced += g.produce(now, &input.messages[produced..]);
        if g.plan.tariff_published_at_ms.is_some_and(|t| t as i64 <= now) && !published {
            published = true;
            g.tariffs.replace(input.later_tariffs.clone());
            g.note(now, "tariff version 32-20260928-002 published".into());
        }
        g.call_faults(now);
        g.lifecycle(now);
        g.rebalance(now);
        g.fetch_and_commit();
        if produced == input.messages.len() && faults.peek().is_none() && g.all_committed() {
            break;
        }
        if now > last_fault + g.plan.input_span_ms as i64 + STALL_AFTER_MS {
            stalled = true;
            let st = world.store.lock().expect("store");
            let frozen = world.frozen.lock().expect("frozen").clone();
            let running = st.running_queries();
            drop(st);
            g.note(now, format!("stalled: frozen {frozen:?}, running {running:?}"));
            let state = g.state();
            g.note(now, state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
    }
    world.quiet.store(true, std::sync::atomic::Ordering::SeqCst);
    g.call_faults(world.elapsed_ms());
    g.stop_all().await;
    tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    let virtual_ms = world.elapsed_ms();
    Outcome { world, trace: g.trace, failures: g.failures, stalled, virtual_ms }
}

impl Group {
    fn note(&mut self, now: i64, what: String) {
        self.trace.push(format!("{now:>7} ms  {what}"));
    }

    fn fault(&mut self, now: i64, f: Fault) {
        self.note(now, format!("fault {f:?}"));
        match f {
            Fault::Crash { instance, restart_after_ms } => {
                self.crash(now, instance);
                self.members[instance].start_at = Some(now + restart_after_ms as i64);
            }
            Fault::Pause { instance, ms } => {
                let m = &mut self.members[instance];
                if m.process.is_some() && m.paused_until.is_none() {
                    m.paused_until = Some(now + ms as i64);
                    m.silent_since = Some(now);
                    self.world.frozen.lock().expect("frozen")[instance] = true;
                }
            }
            Fault::StoreOutage { ms } => self.world.store_down_for(Duration::from_millis(ms)),
            Fault::BrokerOutage { ms } => self.world.broker_down_for(Duration::from_millis(ms)),
            Fault::ClockJump { instance, ms } => {
                self.world.clock_offset_ms.lock().expect("clock")[instance] += ms as i64;
            }
            Fault::Leave { instance, back_after_ms } => {
                let m = &mut self.members[instance];
                if m.process.is_some() && m.paused_until.is_none() {
                    self.leave(instance);
                    self.members[instance].start_at = Some(now + back_after_ms as i64);
                }
            }
        }
    }

    /// Carries out the faults store calls drew (`world::CallFault`).
    fn call_faults(&mut self, now: i64) {
        let drawn = std::mem::take(&mut self.world.call_faults.lock().expect("call faults").0);
        for f in drawn {
            self.note(now, format!("at a store call: {f:?}"));
            match f {
                CallFault::Crashed { instance } => {
                    self.crash(now, instance);
                    let restart_ms = self.world.draw(0..2_000) as i64;
                    self.members[instance].start_at = Some(now + restart_ms);
                }
                CallFault::Paused { instance, ms } => {
                    let m = &mut self.members[instance];
                    if m.process.is_some() && m.paused_until.is_none() {
                        m.paused_until = Some(now + ms as i64);
                        m.silent_since = Some(now);
                    } else if m.paused_until.is_none() {
                        self.world.frozen.lock().expect("frozen")[instance] = false;
                    }
                }
            }
        }
    }

    /// The process dies: every task of it stops at its current await.
    fn crash(&mut self, now: i64, i: usize) {
        let m = &mut self.members[i];
        if let Some(p) = m.process.take() {
            p.instance.crash();
            for (_, h) in p.held {
                h.worker.done.abort();
            }
            for (_, done) in p.revoking {
                done.abort();
            }
            if m.in_group && m.silent_since.is_none() {
                m.silent_since = Some(now);
            }
        }
        m.paused_until = None;
        m.zombie = false;
        self.world.frozen.lock().expect("frozen")[i] = false;
    }

    /// A graceful stop: every partition revoked (its worker lands what it holds, later
    /// checked in `lifecycle`), then the member leaves the group at once.
    fn leave(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.in_group = false;
        m.silent_since = None;
        if let Some(p) = m.process.as_mut() {
            for (part, h) in std::mem::take(&mut p.held) {
                p.revoking.push((part, h.worker.done));
            }
        }
        self.owner.retain(|_, o| *o != i);
    }

    /// Appends what is due to the logs; returns how many messages it appended.
    fn produce(&mut self, now: i64, due: &[(u64, u8, i32, LogMessage)]) -> usize {
        let n = due.iter().take_while(|(at, ..)| *at as i64 <= now).count();
        let mut b = self.world.broker.lock().expect("broker");
        for (_, t, p, m) in &due[..n] {
            b.logs.entry((*t, *p)).or_default().push(m.clone());
        }
        n
    }

    /// Starts, wakes and times out members; reaps workers that stopped.
    fn lifecycle(&mut self, now: i64) {
        for i in 0..self.members.len() {
            self.reap(now, i);
            let m = &mut self.members[i];
            if m.paused_until.is_some_and(|t| now >= t) {
                m.paused_until = None;
                m.silent_since = None;
                self.world.frozen.lock().expect("frozen")[i] = false;
                let zombie = m.zombie;
                self.note(
                    now,
                    format!(
                        "instance {i} wakes up{}",
                        if zombie { " (lost its partitions)" } else { "" }
                    ),
                );
                if zombie {
                    // Its next poll learns it left the group: everything is revoked, its
                    // landings are fenced, and it exits; it is started again later.
                    self.leave(i);
                    self.members[i].start_at = Some(now + 200);
                }
            }
            let m = &mut self.members[i];
            let timeout = SESSION_TIMEOUT_MS as i64;
            if m.in_group && m.silent_since.is_some_and(|t| now >= t + timeout) {
                m.in_group = false;
                m.silent_since = None;
                if m.process.is_some() {
                    m.zombie = true;
                }
                self.owner.retain(|_, o| *o != i);
                self.note(now, format!("instance {i} timed out of the group"));
            }
            let m = &mut self.members[i];
            let can_start = m.start_at.is_some_and(|t| now >= t) && !m.in_group;
            if can_start && m.process.is_none() {
                m.start_at = None;
                self.start(now, i);
            } else if can_start
                && m.process.as_ref().is_some_and(|p| p.revoking.is_empty() && p.held.is_empty())
            {
                // A member that left and is back: a new process, as after a restart.
                if let Some(old) = self.members[i].process.take() {
                    old.instance.crash();
                }
                self.members[i].start_at = None;
                self.start(now, i);
            }
        }
    }

    fn start(&mut self, now: i64, i: usize) {
        let cfg = self.plan.config(i);
        let io = SimIo { world: self.world.clone(), instance: i };
        let rt = tokio::runtime::Handle::current();
        let (instance, commits) = Instance::start(&cfg, self.tariffs.clone(), io, &rt);
        let m = &mut self.members[i];
        m.process =
            Some(Process { instance, commits, held: BTreeMap::new(), revoking: Vec::new() });
        m.in_group = true;
        m.zombie = false;
        self.note(now, format!("instance {i} starts"));
    }

    /// Collects workers that finished: revoked ones are done; any other stopped on an
    /// error, after which the process exits (as `gantry run` does) and is started again.
    fn reap(&mut self, now: i64, i: usize) {
        let Some(p) = self.members[i].process.as_mut() else { return };
        let mut errors = Vec::new();
        p.revoking.retain_mut(|(part, done)| {
            if !done.is_finished() {
                return true;
            }
            errors.push((*part, take_result(done)));
            false
        });
        let stopped: Vec<i32> =
            p.held.iter().filter(|(_, h)| h.worker.done.is_finished()).map(|(k, _)| *k).collect();
        let mut exit = false;
        for part in stopped {
            let mut h = p.held.remove(&part).expect("listed");
            errors.push((part, take_result(&mut h.worker.done)));
            exit = true;
        }
        for (part, r) in errors {
            match r {
                Ok(()) => {}
                Err(e) => {
                    exit = true;
                    let bug = !matches!(e, PipelineError::Worker(..) | PipelineError::Fenced(_));
                    self.note(now, format!("instance {i} partition {part}: {e}"));
                    if bug {
                        self.failures.push(format!("partition {part} on instance {i}: {e}"));
                    }
                }
            }
        }
        if exit {
            self.note(now, format!("instance {i} exits"));
            self.crash(now, i);
            let m = &mut self.members[i];
            if m.in_group {
                // Its member leaves with the process (LeaveGroup on exit).
                m.in_group = false;
                m.silent_since = None;
                self.owner.retain(|_, o| *o != i);
            }
            self.members[i].start_at = Some(now + 500);
        }
    }

    /// Assigns every partition whose owner left to the group's members by ranges, once no
    /// worker of it is still landing (an eager rebalance waits for revocations).
    fn rebalance(&mut self, now: i64) {
        let group: Vec<usize> =
            (0..self.members.len()).filter(|&i| self.members[i].in_group).collect();
        if group.is_empty() {
            return;
        }
        let parts = self.plan.partitions;
        let wanted = |p: i32| group[(p as usize * group.len()) / parts as usize];
        // Revoke what moves away from a live member.
        for p in 0..parts {
            let to = wanted(p);
            if let Some(&from) = self.owner.get(&p) {
                if from == to {
                    continue;
                }
                let m = &mut self.members[from];
                if let (Some(proc_), None) = (m.process.as_mut(), m.paused_until) {
                    if let Some(h) = proc_.held.remove(&p) {
                        proc_.revoking.push((p, h.worker.done));
                    }
                }
                self.owner.remove(&p);
                self.note(now, format!("partition {p} revoked from instance {from}"));
            }
        }
        for p in 0..parts {
            if self.owner.contains_key(&p) {
                continue;
            }
            let still_landing = self.members.iter().any(|m| {
                m.process.as_ref().is_some_and(|pr| pr.revoking.iter().any(|(q, _)| *q == p))
            });
            let to = wanted(p);
            let m = &mut self.members[to];
            let Some(pr) = m.process.as_mut() else { continue };
            if still_landing || m.paused_until.is_some() {
                continue;
            }
            let committed = self.world.broker.lock().expect("broker").committed.get(&p).copied();
            let (lane, acct) = committed.unwrap_or((0, 0));
            let worker = pr.instance.spawn_worker(p, &tokio::runtime::Handle::current());
            pr.held.insert(
                p,
                Held { worker, pos: [lane, acct], told_end: [false; 2], fetched: [false; 2] },
            );
            self.owner.insert(p, to);
            self.note(
                now,
                format!("partition {p} assigned to instance {to} at offsets {lane}/{acct}"),
            );
        }
    }

    /// Each running member's poll: chunks for recovered workers, commits of landed batches.
    fn fetch_and_commit(&mut self) {
        let broker_up = self.world.broker_up();
        for (i, m) in self.members.iter_mut().enumerate() {
            if m.paused_until.is_some() {
                continue;
            }
            let Some(pr) = m.process.as_mut() else { continue };
            while let Ok(c) = pr.commits.try_recv() {
                if m.in_group && self.owner.get(&c.partition) == Some(&i) {
                    let mut b = self.world.broker.lock().expect("broker");
                    b.committed.insert(c.partition, (c.lane_next, c.acct_next));
                }
            }
            if !broker_up {
                continue;
            }
            for (&p, h) in pr.held.iter_mut() {
                // Both sides from one look at the logs, or neither: a side's chunk left
                // behind while the other's went in would make the merge take a stale
                // at-end for the truth (a race production's fetches have too; the
                // simulator leaves it out so that the order is the input's, see
                // `Plan::merge_idle_ms`).
                let recovered = h.worker.recovered.load(std::sync::atomic::Ordering::SeqCst);
                if !recovered || h.worker.tx.capacity() < 2 {
                    continue;
                }
                for t in 0..2u8 {
                    fetch(&self.world, &pr.instance, p, t, h, self.plan.fetch_skips_into_batch);
                }
            }
        }
    }

    /// Every partition's journal has a committed batch ending at both logs' ends.
    fn all_committed(&self) -> bool {
        let b = self.world.broker.lock().expect("broker");
        let st = self.world.store.lock().expect("store");
        (0..self.plan.partitions).all(|p| {
            let end = |t: u8| b.logs.get(&(t, p)).map_or(0, |l| l.len() as i64);
            let (lane, acct) = (end(0), end(1));
            (lane == 0 && acct == 0)
                || st.journal.iter().any(|r| {
                    r.gantry_partition == p as u16
                        && r.is_committed()
                        && r.lane_to == lane
                        && r.acct_to == acct
                })
        })
    }

    /// Who holds what, and where each partition's journal stands (for a stall's trace).
    fn state(&self) -> String {
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let held: Vec<String> = m
                .process
                .iter()
                .flat_map(|p| &p.held)
                .map(|(q, h)| {
                    let w = &h.worker;
                    format!(
                        "p{q} recovered={} room={} finished={} pos={:?}",
                        w.recovered.load(std::sync::atomic::Ordering::SeqCst),
                        w.tx.capacity(),
                        w.done.is_finished(),
                        h.pos
                    )
                })
                .collect();
            out.push(format!(
                "instance {i}: in_group={} paused={:?} held [{}]",
                m.in_group,
                m.paused_until,
                held.join("; ")
            ));
        }
        let st = self.world.store.lock().expect("store");
        for p in 0..self.plan.partitions {
            let last = st
                .journal
                .iter()
                .filter(|r| r.gantry_partition == p as u16)
                .max_by_key(|r| (r.batch_seq, r.is_committed()));
            let b = self.world.broker.lock().expect("broker");
            let ends = [0u8, 1].map(|t| b.logs.get(&(t, p)).map_or(0, Vec::len));
            out.push(format!(
                "p{p} logs end {ends:?}, journal ends {:?}",
                last.map(|r| (r.batch_seq, r.phase.clone(), r.ranges()))
            ));
        }
        out.join(" | ")
    }

    /// Stops every running member gracefully and waits for its workers.
    async fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.world.frozen.lock().expect("frozen")[i] = false;
            let Some(mut p) = self.members[i].process.take() else { continue };
            let mut handles: Vec<Done> = p.held.into_values().map(|h| h.worker.done).collect();
            handles.extend(p.revoking.drain(..).map(|(_, done)| done));
            for done in handles {
                match done.await {
                    Ok(Err(e)) if !matches!(e, PipelineError::Worker(..)) => {
                        self.failures.push(format!("instance {i} at the end: {e}"))
                    }
                    _ => {}
                }
            }
            p.instance.crash();
        }
    }
}

/// A worker's task (its channel's sender dropped: revoked).
type Done = tokio::task::JoinHandle<gantry_pipeline::Result<()>>;

/// The result of a finished task.
fn take_result(done: &mut Done) -> gantry_pipeline::Result<()> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(done).poll(&mut cx) {
        std::task::Poll::Ready(Ok(r)) => r,
        std::task::Poll::Ready(Err(e)) if e.is_cancelled() => Ok(()),
        std::task::Poll::Ready(Err(e)) => Err(PipelineError::Worker(-1, format!("panicked: {e}"))),
        std::task::Poll::Pending => Ok(()),
    }
}

use std::future::Future;

/// One fetch of topic `t` for a held partition: up to a chunk of what the log has from its
/// position, or the news that it is at the end.
fn fetch(world: &World, inst: &Instance<SimIo>, p: i32, t: u8, h: &mut Held, skips: bool) {
    let side = t as usize;
    let topic = if t == 0 { Topic::LaneTx } else { Topic::AccountEvents };
    let b = world.broker.lock().expect("broker");
    let log = b.logs.get(&(t, p)).map_or(&[][..], |l| &l[..]);
    let len = log.len() as i64;
    let mut from = h.pos[side];
    if skips && !h.fetched[side] && from < len {
        // The broker quirk (Tansu 0.6): a fetch inside a producer batch is answered from the
        // next batch, or with nothing at all while there is none (the position stays).
        while from < len && from > 0 && !log[from as usize].batch_start {
            from += 1;
        }
        if from == len {
            return;
        }
    }
    if from >= len {
        if h.told_end[side] {
            return;
        }
        drop(b);
        if h.worker.tx.try_send(inst.at_end(topic)).is_ok() {
            h.told_end[side] = true;
            h.fetched[side] = true;
        }
        return;
    }
    let to = (from + inst.config().chunk_messages_max as i64).min(len);
    let mut c = inst.chunk(topic);
    for (o, m) in log.iter().enumerate().take(to as usize).skip(from as usize) {
        c.push(o as i64, Some(m.timestamp_ms), &m.payload);
    }
    c.at_end = to == len;
    drop(b);
    match h.worker.tx.try_send(c) {
        Ok(()) => {
            h.pos[side] = to;
            h.told_end[side] = to == len;
            h.fetched[side] = true;
        }
        Err(tokio::sync::mpsc::error::TrySendError::Full(c))
        | Err(tokio::sync::mpsc::error::TrySendError::Closed(c)) => inst.give_back(c),
    }
}
