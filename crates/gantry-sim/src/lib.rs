//! A deterministic simulation of the pipeline (issue 15): the real workers, lander,
//! journal, checkpoints, recovery and fencing of `gantry-pipeline`, run through its `io`
//! traits against a simulated broker and store (`world.rs`) by a simulated consumer group
//! (`schedule.rs`), on a paused clock, with faults drawn from one seed; after each
//! schedule the invariants of `check.rs` are checked, and its output is compared with the
//! crash-free run of the same input.
//!
//! What is simulated, and what is not: see `crates/gantry-sim/README.md`.

pub mod check;
pub mod schedule;
pub mod world;

pub use schedule::{Fault, Input, Plan};

/// The verdict on one seed.
pub struct Verdict {
    pub seed: u64,
    pub plan: Plan,
    /// Broken invariants, failed workers, a stall, a difference from the crash-free run.
    pub broken: Vec<String>,
    pub trace: Vec<String>,
    /// Virtual time the faulty run took, ms.
    pub virtual_ms: i64,
    /// What the faulty run wrote, for the trace.
    pub summary: String,
}

/// Runs schedule `seed` and its crash-free reference, and checks everything.
pub fn check_seed(seed: u64) -> Verdict {
    let plan = Plan::of(seed, true);
    let input = Input::of(&plan);
    let faulty = schedule::run(&plan, &input);
    let mut broken = faulty.failures.clone();
    if faulty.stalled {
        broken.push(format!("stalled: not every message committed after {} ms", faulty.virtual_ms));
    } else {
        broken.extend(check::invariants(&faulty.world, plan.partitions));
        // With input arriving while it runs, or a merge that may give up on a silent side,
        // the order of processing may follow timing (contract §3; `Plan::input_span_ms`):
        // only the invariants hold then, not equality.
        let timing_free = plan.merge_idle_ms == schedule::MERGE_IDLE_NEVER_MS
            && plan.input_span_ms == 0
            && plan.tariff_published_at_ms.is_none();
        if timing_free {
            let reference = schedule::run(&Plan::of(seed, false), &input);
            let (a, b) = (check::canonical(&faulty.world), check::canonical(&reference.world));
            broken.extend(check::difference(&a, &b));
        }
    }
    let summary = summary(&faulty.world);
    Verdict { seed, plan, broken, trace: faulty.trace, virtual_ms: faulty.virtual_ms, summary }
}

/// Messages in, batches committed, rows per table.
fn summary(w: &world::World) -> String {
    let st = w.store.lock().expect("store");
    let b = w.broker.lock().expect("broker");
    let messages: usize = b.logs.values().map(Vec::len).sum();
    let committed = st.journal.iter().filter(|r| r.is_committed()).count();
    let tables: Vec<String> = world::TABLES
        .iter()
        .map(|t| {
            let n: usize = st.tables.get(t).into_iter().flatten().map(|w| w.rows.len()).sum();
            format!("{t} {n}")
        })
        .collect();
    format!(
        "{messages} messages; {committed} committed journal rows, {} in all; {} checkpoints; {} status messages; rows: {}",
        st.journal.len(),
        st.checkpoints.len(),
        b.status.len(),
        tables.join(", ")
    )
}

/// Card `card`'s ledger in the faulty run of `seed` and in its crash-free run, in chain
/// order: (batch, place, message, amount, balance after) — for chasing a difference.
pub fn ledger_of(seed: u64, card: &str) -> [Vec<String>; 2] {
    let plan = Plan::of(seed, true);
    let input = Input::of(&plan);
    [schedule::run(&plan, &input), schedule::run(&Plan::of(seed, false), &input)].map(|o| {
        let st = o.world.store.lock().expect("store");
        let b = o.world.broker.lock().expect("broker");
        let mut chain = Vec::new();
        for w in st.tables.get("ledger").into_iter().flatten() {
            for (row, r) in &w.rows {
                if let world::Row::Ledger { source, card: c, amount, balance_after, .. } = r {
                    if c == card {
                        let ts = b.logs[&(source.0, source.1)][source.2 as usize].timestamp_ms;
                        chain.push((
                            (w.partition, w.seq, *row),
                            format!("{:?} ts {ts} {amount} → {balance_after}", source),
                        ));
                    }
                }
            }
        }
        chain.sort();
        chain.into_iter().map(|(k, s)| format!("{k:?} {s}")).collect()
    })
}
