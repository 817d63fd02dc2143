//! Faults beyond a single crash, against the real broker and ClickHouse
//! (`deploy/local/stack up`), each ending with the full exactly-once check over ≥ 100k
//! generated lane records: a record dated a year ahead (its Kafka timestamp too), the
//! schema missing when Gantry starts, stopping — SIGTERM with landing blocked, a second
//! SIGTERM, and a graceful stop that leaves nothing to replay — a view failing after its
//! source, a paused instance whose partitions are taken over, a tariff version added mid-run
//! then a crash and a replay without it, the broker (a test's own) restarted mid-run, and
//! records uploaded days late, with a crash while they are settled, a stop while lane
//! records wait for their account events, a partition stuck in recovery beside a busy one,
//! and ClickHouse (a test's own) killed for 30 s mid-run. (The silent account side and the
//! memory cap are tests of their own: `silent.rs`, `memory.rs`.)

#![forbid(unsafe_code)]

use std::process::{Child, Command};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_core::TariffStore;
use gantry_gen::{Traffic, TrafficConfig};
use gantry_tests::Env;

mod common;
use common::*;

/// One lane record per partition dated a year ahead — and stamped a year ahead in Kafka too,
/// so the Kafka timestamp cannot tell — after the first half of the traffic; a second run
/// then settles the second half. Each far-future record is rejected `time_in_future`
/// against Gantry's own clock, and nothing else is disturbed: before the fix, each dragged
/// its partition's dedup window a year ahead and every later record of the partition was
/// rejected `outside_dedup_window`. (Two runs, so the far-future record is the last lane
/// record its merge sees: its Kafka timestamp would otherwise hold the rest of its lane
/// partition back behind every account event, as the merge rule says, and the generator's
/// traffic is two months old.)
#[test]
fn a_record_from_next_year_does_not_move_the_dedup_window() {
    const PARTITIONS: i32 = 2;
    let (env, tariff_dir, net, mut traffic) = setup("future", PARTITIONS, 31);
    env.produce_traffic(&mut traffic, RECORDS / 2);
    let year_ms = 365 * 86_400_000;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let unit = &net.units[0].id;
    for p in 0..PARTITIONS {
        let time = gantry_core::time::format_timestamp(now_ms + year_ms, gantry_gen::OFFSET_MIN);
        let record = format!(
            r#"{{"tradeId":"FUTURE-{p}","gantryId":"G-FUTURE","tollIntervalId":"{unit}","transTime":"{time}","mediaType":2,"vehicleType":1}}"#
        );
        env.produce_to(&env.cfg.lane_topic, p, "cpc", record.as_bytes(), now_ms + year_ms);
    }
    env.run(&env.cfg, &tariff_dir);
    env.produce_traffic(&mut traffic, u64::MAX);
    env.run(&env.cfg, &tariff_dir);
    let future: Vec<u64> = env.query("SELECT count() FROM rejects WHERE reason = 'time_in_future'");
    assert_eq!(future[0], PARTITIONS as u64, "each far-future record rejected");
    let settled: Vec<u64> =
        env.query("SELECT count() FROM settlements WHERE trade_id LIKE 'FUTURE-%'");
    assert_eq!(settled[0], 0);
    env.assert_settled_exactly_once_besides(&traffic.tally, PARTITIONS as u64);
}

/// ClickHouse without Gantry's database when Gantry starts (a fresh install whose schema is
/// applied late, or a ClickHouse not ready yet): each partition's recovery is retried with
/// backoff, and once the schema is there everything is settled exactly once. Before, the
/// first failed recovery stopped the instance.
#[test]
fn a_missing_schema_at_start_is_waited_for() {
    let (env, tariff_dir, _, mut traffic) = setup("late_schema", 2, 37);
    env.produce_traffic(&mut traffic, u64::MAX);
    env.exec(&format!("DROP DATABASE {}", env.cfg.database));
    let cfg = env.cfg.clone();
    let set = TariffStore::load_root(&tariff_dir, cfg.network_utc_offset_min).unwrap();
    let run = std::thread::spawn(move || {
        gantry_pipeline::run(cfg, Arc::new(TariffStore::new(set)), Arc::new(AtomicBool::new(false)))
    });
    // Long enough for several failed recoveries (retried from 0.5 s on).
    std::thread::sleep(Duration::from_secs(3));
    assert!(!run.is_finished(), "gantry gave up while the schema was missing");
    env.apply_schema();
    run.join().unwrap().expect("gantry run");
    env.assert_settled_exactly_once(&traffic.tally);
}

/// SIGTERM while landing cannot succeed (an INSERT into the journal fails, as with a
/// ClickHouse refusing writes): Gantry keeps trying to land what it holds, so it does not
/// exit; a second SIGTERM exits at once with status 75, leaving what it held to be re-read.
/// Once landing works again, a restart settles everything exactly once. Before, the second
/// SIGTERM was ignored and the process hung.
#[test]
fn a_second_sigterm_exits_at_once_and_loses_nothing() {
    let (env, tariff_dir, _, mut traffic) = setup("sigterm", 2, 47);
    env.produce_traffic(&mut traffic, u64::MAX);
    // Every INSERT into the journal fails after its part is written.
    env.exec("CREATE MATERIALIZED VIEW block_landing ENGINE = Memory AS SELECT throwIf(count() > 0) AS blocked FROM gantry_batches");
    let config = env.write_config("exit_when_idle_ms = 2000\nsession_timeout_ms = 6000\n");
    let log = config.with_file_name("gantry.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    wait_for(&mut child, &log, "a failed landing", || {
        log_text(&log).contains("batches not landed; retrying")
    });
    sigterm(&child);
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "exited on the first SIGTERM without landing");
    sigterm(&child);
    let status = wait_exit(&mut child, &log, "the exit on a second SIGTERM");
    assert_eq!(status.code(), Some(75), "exit status of a stop that left batches unlanded");
    env.exec("DROP TABLE block_landing");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    assert!(child.wait().unwrap().success(), "the restart failed; see {}", log.display());
    env.assert_settled_exactly_once(&traffic.tally);
}

/// A graceful stop (one SIGTERM, mid-run) lands what is in flight and checkpoints each
/// partition after its last batch, so the restart replays nothing; the end result is exact.
/// Checkpoints are otherwise far apart here (every 1,000 batches), so before the fix the
/// restart replayed every batch of the first run.
#[test]
fn a_graceful_stop_leaves_nothing_to_replay() {
    let (env, tariff_dir, _, mut traffic) = setup("graceful", 2, 59);
    env.produce_traffic(&mut traffic, u64::MAX);
    let config = env.write_config(
        "exit_when_idle_ms = 2000\nsession_timeout_ms = 6000\nbatch_rows_max = 5000\ncheckpoint_every_batches = 1000\n",
    );
    let log = config.with_file_name("gantry.log");
    let committed = || committed_batches(&env);
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    wait_for(&mut child, &log, "three committed batches", || committed() >= 3);
    sigterm(&child);
    assert!(child.wait().unwrap().success(), "a graceful stop failed; see {}", log.display());
    let first_run = log_text(&log);
    let checkpoints: Vec<u64> = env.query("SELECT count() FROM gantry_checkpoints");
    assert!(checkpoints[0] >= 1, "no checkpoint at the stop");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    assert!(child.wait().unwrap().success(), "the restart failed; see {}", log.display());
    let restart = &log_text(&log)[first_run.len()..];
    let recoveries: Vec<&str> =
        restart.lines().filter(|l| l.contains("partition recovered")).collect();
    assert_eq!(recoveries.len(), 2, "{restart}");
    for r in recoveries {
        assert!(r.contains("replayed=0") && r.contains("completed=0"), "the restart replayed: {r}");
    }
    env.assert_settled_exactly_once(&traffic.tally);
}

/// A materialized view on `settlements` fails for a while — each INSERT writes the table's
/// part, then errors — as a rollup's "too many parts" would. The retries skip `settlements`
/// (its rows are there) and write the rest; since Gantry writes the rollups itself, tagged
/// per batch like every other table, the rollups still hold each batch exactly once. Before,
/// the rollups were materialized views on the same INSERT, and `customer_usage_daily` lost
/// the batches whose INSERT failed after their views' parts were (or were not) written.
#[test]
fn a_view_failing_after_its_source_leaves_every_table_exact() {
    let (env, tariff_dir, _, mut traffic) = setup("failing_view", 2, 67);
    env.produce_traffic(&mut traffic, u64::MAX);
    // Named to sort first: ClickHouse pushes an INSERT to a table's views in name order, so
    // this one fails before any other view of `settlements` has seen the block.
    env.exec(
        "CREATE MATERIALIZED VIEW a_failing_view ENGINE = Memory AS SELECT throwIf(count() > 0) AS failed FROM settlements",
    );
    let cfg = env.cfg.clone();
    let set = TariffStore::load_root(&tariff_dir, cfg.network_utc_offset_min).unwrap();
    let run = std::thread::spawn(move || {
        gantry_pipeline::run(cfg, Arc::new(TariffStore::new(set)), Arc::new(AtomicBool::new(false)))
    });
    // Until the first failed INSERTs have left their parts in `settlements`, then a little.
    let started = Instant::now();
    while env.query::<u64>("SELECT count() FROM settlements")[0] == 0 {
        assert!(started.elapsed() < STUCK_AFTER, "no failed INSERT seen");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    env.exec("DROP TABLE a_failing_view");
    run.join().unwrap().expect("gantry run");
    // Each landing attempt journals its batches as planned again: more planned rows than
    // committed ones are the failed attempts.
    let (planned, committed): (u64, u64) = env.query(
        "SELECT countIf(phase = 'planned'), countIf(phase = 'committed') FROM gantry_batches",
    )[0];
    assert!(planned > committed, "no INSERT failed ({planned} planned, {committed} committed)");
    env.assert_settled_exactly_once(&traffic.tally);
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// A zombie: an instance paused (SIGSTOP) mid-run, past its session timeout, while another
/// instance takes its partitions over — here the test does what a new owner does first, a
/// higher epoch in `gantry_owners` for each partition (Tansu's coordinator does not reliably
/// hand a paused member's partitions to another member within the pause) — and then resumed
/// with everything it held. Every write it then tries is fenced: it says so and stops, and
/// after one more run every record is settled exactly once. Before, the resumed instance
/// landed what it held over what the new owner wrote: its batches twice.
#[test]
fn a_paused_instance_that_lost_its_partition_writes_nothing() {
    let (env, tariff_dir, _, mut traffic) = setup("zombie", 2, 73);
    env.produce_traffic(&mut traffic, RECORDS / 10);
    let config = env
        .write_config("session_timeout_ms = 6000\nbatch_rows_max = 4000\ninstance = \"zombie\"\n");
    let config_last = config.with_file_name("last.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config_last,
        text.replace("\"zombie\"", "\"last\"") + "exit_when_idle_ms = 2000\n",
    )
    .unwrap();
    let log = config.with_file_name("zombie.log");
    let mut zombie = spawn_gantry(&config, &tariff_dir, &log);
    let owned = || env.query::<u64>("SELECT uniqExact(gantry_partition) FROM gantry_owners")[0];
    wait_for(&mut zombie, &log, "both partitions owned", || owned() == 2);
    // More traffic, and the instance paused while a batch of it is landing: landing is
    // refused (a view on the journal that throws) until the instance is paused, so it holds
    // a batch it will try to write again the moment it resumes. (A drain on revocation
    // writes nothing that must wait for the other side, so without a batch in flight a
    // resumed instance may have nothing to write at all.)
    env.exec("CREATE MATERIALIZED VIEW block_landing ENGINE = Memory AS SELECT throwIf(count() > 0) AS blocked FROM gantry_batches");
    env.produce_traffic(&mut traffic, RECORDS / 2);
    wait_for(&mut zombie, &log, "a refused landing", || {
        log_text(&log).contains("batches not landed; retrying")
    });
    signal(&zombie, "-STOP");
    env.exec("DROP TABLE block_landing");
    env.produce_traffic(&mut traffic, u64::MAX);
    std::thread::sleep(Duration::from_secs(8)); // past the session timeout
    env.exec(
        "INSERT INTO gantry_owners SELECT gantry_partition, max(epoch) + 1, 'usurper', now() FROM gantry_owners GROUP BY gantry_partition",
    );
    let committed = || committed_batches(&env);
    let before = committed();
    signal(&zombie, "-CONT");
    let started = Instant::now();
    while zombie.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if zombie.try_wait().unwrap().is_none() {
        sigterm(&zombie);
        let _ = zombie.wait();
    }
    assert!(
        log_text(&log).contains("taken over by another instance"),
        "the resumed instance never tried to write for its lost partitions; see {}",
        log.display()
    );
    assert_eq!(committed(), before, "the zombie committed a batch after losing its partitions");
    // The stopped zombie is still a member until its session times out; after that the last
    // run is given every partition.
    std::thread::sleep(Duration::from_secs(8));
    let mut last = spawn_gantry(&config_last, &tariff_dir, &log);
    assert!(last.wait().unwrap().success(), "the last run failed; see {}", log.display());
    env.assert_settled_exactly_once(&traffic.tally);
}

/// A second tariff version, in force for all the traffic, is renamed into the tariff
/// directory mid-run: it is loaded without a restart and prices the batches after it. Then
/// the instance is killed, the version is removed from the directory, and a restart replays
/// every batch (no checkpoint was written): each with the set it was priced with, the new
/// version rebuilt from ClickHouse. Balances therefore come out as first computed: the
/// ledger chains are gapless. Before, tariffs loaded only at start (no row priced by the new
/// version); replaying with the directory's set instead of the journaled one re-prices
/// those batches and breaks every chain they touch.
#[test]
fn a_tariff_version_added_mid_run_is_replayed_as_it_priced() {
    let (env, tariff_dir, _, mut traffic) = setup("tariff_change", 2, 79);
    let first = "32-20260101-001"; // what `Network::tariff_toml` names its version
    let second = "32-20260901-001";
    env.produce_traffic(&mut traffic, RECORDS / 3);
    let config = env.write_config(
        "session_timeout_ms = 6000\nbatch_rows_max = 4000\ncheckpoint_every_batches = 1000\ntariff_scan_interval_ms = 200\n",
    );
    let log = config.with_file_name("tariff.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    let committed = || committed_batches(&env);
    wait_for(&mut child, &log, "three committed batches", || committed() >= 3);
    // Written under a hidden name, then renamed into place: never read half-written.
    let staged = tariff_dir.join(".staging");
    std::fs::create_dir_all(&staged).unwrap();
    let toml = std::fs::read_to_string(tariff_dir.join("tariff.toml")).unwrap();
    let toml = toml
        .replace(first, second)
        .replace("2026-01-01T00:00:00+08:00", "2026-09-01T00:00:00+08:00")
        .replace("etc_discount_bp = 500", "etc_discount_bp = 900");
    std::fs::write(staged.join("tariff.toml"), toml).unwrap();
    std::fs::copy(tariff_dir.join("intervals.csv"), staged.join("intervals.csv")).unwrap();
    let added = tariff_dir.join("v2");
    std::fs::rename(&staged, &added).unwrap();
    wait_for(&mut child, &log, "the new version loaded", || {
        log_text(&log).contains("tariff set loaded")
    });
    env.produce_traffic(&mut traffic, 2 * RECORDS / 3);
    let by = |v: &str| {
        env.query::<u64>(&format!("SELECT count() FROM settlements WHERE tariff_version = '{v}'"))
            [0]
    };
    wait_for(&mut child, &log, "settlements priced by the new version", || by(second) >= 20_000);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&added).unwrap();
    env.produce_traffic(&mut traffic, u64::MAX);
    let restart = restart_until_idle(&env, &tariff_dir, &log);
    assert!(
        restart.contains("replaying with a stored tariff set"),
        "the restart did not replay with the stored set; see {}",
        log.display()
    );
    assert!(by(first) > 0, "no settlement priced by the first version");
    assert!(by(second) >= 20_000, "settlements of the new version lost");
    env.assert_settled_exactly_once(&traffic.tally);
}

/// The broker (Tansu with `sqlite://` storage, a test's own) killed mid-run and started
/// again 10 s later, with traffic still to come. Gantry waits for it and settles everything
/// exactly once. Seen before: after the restart, partitions settled thousands of lane
/// records with no account event applied (`unknown_card`; their account side taken as at its
/// end), or the status-list producer retried for minutes and stalled every partition.
#[test]
fn a_broker_restart_mid_run_loses_and_doubles_nothing() {
    let dir = std::env::temp_dir().join(format!("gantry-broker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut broker = PrivateBroker::start(BROKER_RESTART_PORT, &dir);
    let env = Env::with_brokers("broker_restart", 2, &broker.addr);
    let (env, tariff_dir, _, mut traffic) = setup_in(env, 83);
    env.produce_traffic(&mut traffic, RECORDS / 2);
    let config = env.write_config("session_timeout_ms = 6000\nbatch_rows_max = 4000\n");
    let log = config.with_file_name("broker.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    let committed = || committed_batches(&env);
    wait_for(&mut child, &log, "three committed batches", || committed() >= 3);
    broker.stop();
    std::thread::sleep(Duration::from_secs(10));
    broker.resume();
    env.produce_traffic(&mut traffic, u64::MAX);
    let lane_messages = traffic.tally.lane_records();
    let processed = || lane_records_processed(&env);
    wait_for(&mut child, &log, "every lane record processed", || processed() >= lane_messages);
    stop_cleanly(&mut child, &log);
    env.assert_settled_exactly_once(&traffic.tally);
}

/// The private broker's port in the broker-restart test (the shared one is 9092).
const BROKER_RESTART_PORT: u16 = 9192;

/// A gantry offline for days: every eighth valid lane record of the first 40% of the traffic
/// (its first five or so days of 14) is held back and uploaded after the rest, when it is
/// older than the 7-day dedup window — with a copy of every twentieth early record already
/// settled (late re-sends), and a second copy of some held-back ones, right after the first
/// (the same batch) or at the very end (a later batch). Each late record is looked up in
/// what is settled: the held-back ones are settled once, every copy is a duplicate, none is
/// rejected `outside_dedup_window`. Gantry is killed once a batch whose lookup found settled
/// ids is committed; no checkpoint is written, so the restart replays every batch, each
/// deciding its late records by the answers journaled with it (asking again would find the
/// batch's own rows, and the replay would not reproduce its journal). Before, every late
/// record was rejected.
#[test]
fn records_days_late_are_settled_once_even_across_a_crash() {
    let (env, tariff_dir, _, mut traffic) = setup("late", 2, 89);
    let early_records = 2 * RECORDS / 5;
    let mut held: Vec<(String, Vec<u8>)> = Vec::new();
    let mut resent: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut lane, mut valid, mut last_ts) = (0u64, 0u64, 0i64);
    while let Some(m) = traffic.next_message() {
        let key = std::str::from_utf8(m.key).unwrap().to_string();
        last_ts = last_ts.max(m.timestamp_ms);
        let topic = match m.topic {
            gantry_gen::Topic::AccountEvents => &env.cfg.account_topic,
            gantry_gen::Topic::LaneTx => {
                lane += 1;
                if lane <= early_records && m.kind == gantry_gen::Kind::Valid {
                    valid += 1;
                    if valid % 8 == 0 {
                        held.push((key, m.value.to_vec()));
                        continue;
                    }
                    if valid % 20 == 1 {
                        resent.push((key.clone(), m.value.to_vec()));
                    }
                }
                &env.cfg.lane_topic
            }
        };
        env.produce(topic, &key, m.value, m.timestamp_ms);
    }
    // The late upload, stamped after everything else, so it is merged last.
    let mut copies = 0;
    let mut ts = last_ts + 60_000;
    let mut upload = |key: &str, value: &[u8]| {
        ts += 1;
        env.produce(&env.cfg.lane_topic, key, value, ts);
    };
    for (i, (key, value)) in held.iter().enumerate() {
        upload(key, value);
        if i % 10 == 0 {
            upload(key, value);
            copies += 1;
        }
        if i % 3 == 0 {
            let (key, value) = &resent[(i / 3) % resent.len()];
            upload(key, value);
            copies += 1;
        }
    }
    for (key, value) in held.iter().skip(5).step_by(10) {
        upload(key, value);
        copies += 1;
    }
    env.flush();
    traffic.tally.duplicates += copies;
    assert!(held.len() > 4_000 && copies > 2_000, "{} held, {copies} copies", held.len());
    let config = env.write_config(
        "session_timeout_ms = 6000\nbatch_rows_max = 3000\ncheckpoint_every_batches = 1000\n",
    );
    let log = config.with_file_name("late.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    let answered = || {
        env.query::<u64>(
            "SELECT count() FROM gantry_batches WHERE phase = 'committed' AND length(late_known) > 0",
        )[0]
    };
    wait_for(&mut child, &log, "a committed batch with late records found settled", || {
        answered() >= 1
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let restart = restart_until_idle(&env, &tariff_dir, &log);
    let replayed: usize = restart
        .lines()
        .filter(|l| l.contains("partition recovered"))
        .filter_map(|l| {
            l.split("replayed=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok()
        })
        .sum();
    assert!(replayed > 0, "the restart replayed nothing; see {}", log.display());
    let late: Vec<(u64, u64)> = env.query(
        "SELECT countIf(length(late_known) > 0), sum(length(late_known)) FROM gantry_batches WHERE phase = 'committed'",
    );
    assert!(late[0].0 >= 1 && late[0].1 > 0, "no late record found settled: {late:?}");
    env.assert_settled_exactly_once(&traffic.tally);
}

/// A stop while lane records wait for the account side: the lane records are in Kafka, the
/// account events that open their cards are not yet (they are sent later, stamped earlier —
/// a slow issuer system), and the merge waits for them (`merge_idle_ms` far off). SIGTERM
/// drains the worker, and a drain must not settle a lane record ahead of an account event
/// that may precede it: it leaves them unprocessed, and after the restart, with the account
/// events sent, every record is settled with its card known. Before, a drain gave up on the
/// account side and rejected every one of them `unknown_card`.
#[test]
fn a_drain_settles_no_lane_record_ahead_of_its_account_events() {
    let (env, tariff_dir, net, _) = setup("drain_order", 2, 101);
    let mut traffic = traffic_without_topups(&net, 102);
    let mut account_events: Vec<(String, Vec<u8>, i64)> = Vec::new();
    while let Some(m) = traffic.next_message() {
        let key = std::str::from_utf8(m.key).unwrap().to_string();
        match m.topic {
            gantry_gen::Topic::AccountEvents => {
                account_events.push((key, m.value.to_vec(), m.timestamp_ms))
            }
            gantry_gen::Topic::LaneTx => {
                env.produce(&env.cfg.lane_topic, &key, m.value, m.timestamp_ms)
            }
        }
    }
    env.flush();
    let config = env.write_config("session_timeout_ms = 6000\nmerge_idle_ms = 600000\n");
    let log = config.with_file_name("drain.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    wait_for(&mut child, &log, "both partitions recovered", || {
        log_text(&log).matches("partition recovered").count() >= 2
    });
    // Long enough for the lane records to be fetched and handed to the workers.
    std::thread::sleep(Duration::from_secs(3));
    sigterm(&child);
    let status = wait_exit(&mut child, &log, "the stop");
    assert!(status.success(), "the stop failed; see {}", log.display());
    let settled: Vec<(u64, u64)> = env.query(
        "SELECT (SELECT count() FROM settlements), (SELECT count() FROM rejects WHERE reason = 'unknown_card')",
    );
    assert_eq!(settled[0], (0, 0), "the drain settled lane records ahead of their account events");
    for (key, value, ts) in &account_events {
        env.produce(&env.cfg.account_topic, key, value, *ts);
    }
    env.flush();
    restart_until_idle(&env, &tariff_dir, &log);
    env.assert_settled_exactly_once(&traffic.tally);
}

/// A partition stuck in recovery — its journal names offsets its topic does not have, so
/// replay waits for them and is retried without end — while another partition of the same
/// instance has all the traffic. The stuck one must not hold the other back: its fetch is
/// paused until it has recovered. Before, the poller went on fetching for it, filled its
/// worker's channel (small here) and then blocked handing it more, and every other partition
/// of the instance stopped with it.
#[test]
fn a_partition_stuck_in_recovery_holds_no_other_back() {
    let (env, tariff_dir, net, mut traffic) = setup("stuck_recovery", 2, 103);
    env.exec(
        "INSERT INTO gantry_batches (gantry_partition, batch_seq, phase, lane_from, lane_to, acct_from, acct_to, instance) VALUES (0, 1, 'committed', 0, 1000000, 0, 0, 'test')",
    );
    while let Some(m) = traffic.next_message() {
        let key = std::str::from_utf8(m.key).unwrap();
        let topic = match m.topic {
            gantry_gen::Topic::AccountEvents => &env.cfg.account_topic,
            gantry_gen::Topic::LaneTx => &env.cfg.lane_topic,
        };
        env.produce_to(topic, 1, key, m.value, m.timestamp_ms);
    }
    // Enough for the stuck partition to fill its worker's channel many times over.
    let mut filler = Traffic::new(
        TrafficConfig { records: 20_000, seed: 104, ..TrafficConfig::default() },
        &net,
    );
    while let Some(m) = filler.next_message() {
        if m.topic == gantry_gen::Topic::LaneTx {
            let key = std::str::from_utf8(m.key).unwrap();
            env.produce_to(&env.cfg.lane_topic, 0, key, m.value, m.timestamp_ms);
        }
    }
    env.flush();
    let config = env.write_config(
        "session_timeout_ms = 6000\nchannel_chunks_max = 2\nchunk_messages_max = 500\n",
    );
    let log = config.with_file_name("stuck.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    let lane_records = traffic.tally.lane_records();
    let processed = |p: u16| {
        env.query::<u64>(&format!(
            "SELECT sum(lane_records) FROM gantry_batches WHERE gantry_partition = {p} AND phase = 'committed'"
        ))[0]
    };
    wait_for(&mut child, &log, "every lane record of partition 1 processed", || {
        processed(1) >= lane_records
    });
    let stuck: Vec<u64> =
        env.query("SELECT count() FROM gantry_batches WHERE gantry_partition = 0");
    assert_eq!(stuck[0], 1, "partition 0 was not stuck: it wrote batches");
    child.kill().unwrap();
    child.wait().unwrap();
    env.assert_settled_exactly_once(&traffic.tally);
}

/// The private ClickHouse's HTTP port in the ClickHouse-outage test (the shared one's is
/// 8123; native and interserver take the next two).
const CLICKHOUSE_OUTAGE_PORT: u16 = 18123;

/// ClickHouse (a test's own server, so no other test is disturbed) killed mid-run and
/// started again 30 s later, with traffic still to come: Gantry's workers stall on their
/// landings and retry, nothing is lost or doubled, and once ClickHouse is back everything is
/// settled exactly once.
#[test]
fn a_clickhouse_outage_of_30_s_loses_and_doubles_nothing() {
    let dir = std::env::temp_dir().join(format!("gantry-clickhouse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut clickhouse = PrivateClickHouse::start(CLICKHOUSE_OUTAGE_PORT, &dir);
    let env = Env::with_services("clickhouse_outage", 2, gantry_tests::BROKERS, &clickhouse.url);
    let (env, tariff_dir, _, mut traffic) = setup_in(env, 109);
    env.produce_traffic(&mut traffic, RECORDS / 2);
    let config = env.write_config("session_timeout_ms = 6000\nbatch_rows_max = 4000\n");
    let log = config.with_file_name("clickhouse.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    let committed = || committed_batches(&env);
    wait_for(&mut child, &log, "three committed batches", || committed() >= 3);
    clickhouse.stop();
    env.produce_traffic(&mut traffic, u64::MAX);
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        child.try_wait().unwrap().is_none(),
        "gantry exited during the outage; see {}",
        log.display()
    );
    clickhouse.resume();
    let lane_messages = traffic.tally.lane_records();
    let processed = || lane_records_processed(&env);
    wait_for(&mut child, &log, "every lane record processed", || processed() >= lane_messages);
    stop_cleanly(&mut child, &log);
    assert!(
        log_text(&log).contains("batches not landed; retrying"),
        "no landing failed during the outage; see {}",
        log.display()
    );
    env.assert_settled_exactly_once(&traffic.tally);
    drop(env);
}
