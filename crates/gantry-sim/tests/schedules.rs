//! The simulator in CI: 10,000 fault schedules (four tests of 2,500, so both cores work),
//! the seeds that found bugs, a seed replayed twice, and the checks shown to fail on a
//! store that breaks each invariant.

use gantry_sim::{check, check_seed, schedule, Input, Plan};

/// The seeds kept as regression cases, with the mutation that makes each fail.
const REGRESSION_SEEDS: [(&str, u64); 5] = [
    ("retry_beside_running", 296),
    ("fence_before_wait", 10_734),
    ("fence_before_wait", 103_743),
    ("probe_only_waiting", 408),
    ("landing_only_when_overdue", 1_317),
];

/// Schedules per test; four tests make the 10,000 of issue 15.
const SCHEDULES_PER_TEST: u64 = 2_500;

/// Runs `SCHEDULES_PER_TEST` seeds from `from`; fails naming every seed that broke.
fn run_from(from: u64) {
    let mut failed = Vec::new();
    let mut faults = 0;
    for seed in from..from + SCHEDULES_PER_TEST {
        let v = check_seed(seed);
        faults += v.plan.faults.len();
        if !v.broken.is_empty() {
            failed.push(format!("seed {seed}: {}", v.broken.join("; ")));
        }
    }
    println!(
        "{SCHEDULES_PER_TEST} schedules from seed {from}: {faults} planned faults, {} failed",
        failed.len()
    );
    assert!(faults > SCHEDULES_PER_TEST as usize, "the schedules hold faults");
    assert!(
        failed.is_empty(),
        "replay each with `cargo run -p gantry-sim -- --seed N`:\n{}",
        failed.join("\n")
    );
}

#[test]
fn schedules_1_to_2500() {
    run_from(1);
}

#[test]
fn schedules_2501_to_5000() {
    run_from(2_501);
}

#[test]
fn schedules_5001_to_7500() {
    run_from(5_001);
}

#[test]
fn schedules_7501_to_10000() {
    run_from(7_501);
}

/// Seeds that fail with a bug the simulator found switched back on (`scripts/mutations`
/// checks they do; crates/gantry-sim/MUTATIONS.md says which bug each shows).
#[test]
fn the_seeds_that_found_bugs_pass() {
    for seed in REGRESSION_SEEDS.iter().map(|(_, s)| *s) {
        let v = check_seed(seed);
        assert!(v.broken.is_empty(), "seed {seed}: {:?}", v.broken);
    }
}

/// The same seed is the same run: every event at the same virtual time, the same rows.
#[test]
fn a_seed_replays_the_same_run() {
    for seed in [7, 103_743] {
        let (a, b) = (check_seed(seed), check_seed(seed));
        assert_eq!(a.trace, b.trace, "seed {seed}");
        assert_eq!(a.summary, b.summary, "seed {seed}");
        assert_eq!(a.virtual_ms, b.virtual_ms, "seed {seed}");
        assert!(a.trace.len() > 3, "seed {seed} did something: {:?}", a.trace);
    }
}

/// Each check fails on a store that breaks its invariant: a batch written twice, a ledger
/// entry off its chain, a committed batch missing from the journal, a row changed.
#[test]
fn the_checks_fail_on_broken_stores() {
    let plan = Plan::of(3, false);
    let input = Input::of(&plan);
    let clean = schedule::run(&plan, &input);
    assert!(check::invariants(&clean.world, plan.partitions).is_empty());
    let reference = check::canonical(&clean.world);
    let broken = |edit: &dyn Fn(&mut gantry_sim::world::StoreState)| {
        let run = schedule::run(&plan, &input);
        edit(&mut run.world.store.lock().unwrap());
        let mut found = check::invariants(&run.world, plan.partitions);
        found.extend(check::difference(&check::canonical(&run.world), &reference));
        found
    };
    let twice = broken(&|st| {
        let w = st.tables.get("settlements").unwrap()[0].clone();
        st.tables.get_mut("settlements").unwrap().push(w);
    });
    assert!(twice.iter().any(|b| b.contains("2 times")), "{twice:?}");
    let off_chain = broken(&|st| {
        let w = &mut st.tables.get_mut("ledger").unwrap()[0];
        if let gantry_sim::world::Row::Ledger { balance_after, .. } = &mut w.rows[0].1 {
            *balance_after += 1;
        }
    });
    assert!(off_chain.iter().any(|b| b.contains("the chain")), "{off_chain:?}");
    let uncommitted = broken(&|st| {
        let last = st.journal.iter().rposition(|r| r.is_committed()).unwrap();
        st.journal.remove(last);
    });
    assert!(uncommitted.iter().any(|b| b.contains("not committed")), "{uncommitted:?}");
    let changed = broken(&|st| {
        let w = &mut st.tables.get_mut("duplicates").unwrap()[0];
        w.rows.pop();
    });
    assert!(changed.iter().any(|b| b.contains("differs")), "{changed:?}");
}
