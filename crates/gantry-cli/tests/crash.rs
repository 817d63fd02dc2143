//! The `gantry` binary killed with SIGKILL at ten moments of one run, against the real broker
//! and ClickHouse (`deploy/local/stack up`): right after start (while it joins the group or
//! recovers), inside a landing, and mid-stream. Each restart recovers its partitions from the
//! batch journal and checkpoints, and in the end every record is settled exactly once. (Not
//! with static membership, `group_instance_id`: Tansu 0.6 assigns and revokes a static
//! member's partitions every session timeout, endlessly.)

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use gantry_gen::{Network, Topic, Traffic, TrafficConfig};
use gantry_tests::{Env, BROKERS, CLICKHOUSE};

mod common;
use common::spawn_gantry;

/// Kills per test: each one lands at a different point of the pipeline (mid-batch,
/// mid-INSERT, between INSERT and offset commit, during joining and recovery).
const KILLS: u64 = 10;
/// Messages produced before each run; the last run drains them all (≥ 100k lane records in
/// all, the fault issue's floor).
const RECORDS_PER_ROUND: u64 = 10_000;

#[test]
fn gantry_killed_mid_run_settles_every_record_exactly_once() {
    let env = Env::new("crash", 3);
    let net = Network::new(17, 300, 8);
    let tmp = std::env::temp_dir().join(format!("gantry-crash-{}", env.cfg.database));
    std::fs::create_dir_all(&tmp).unwrap();
    let tariff_dir = tmp.join("tariff");
    net.write_tariff_dir(&tariff_dir).unwrap();
    let config = tmp.join("gantry.toml");
    let c = &env.cfg;
    // Small batches and frequent checkpoints: many batches in flight to be cut short.
    std::fs::write(
        &config,
        format!(
            "brokers = \"{BROKERS}\"\nclickhouse_url = \"{CLICKHOUSE}\"\ndatabase = \"{}\"\ngroup_id = \"{}\"\n\
             lane_topic = \"{}\"\naccount_topic = \"{}\"\nstatus_topic = \"{}\"\n\
             batch_rows_max = 1500\ncheckpoint_every_batches = 4\nflush_interval_ms = 200\nmerge_idle_ms = 50\n\
             session_timeout_ms = 6000\nexit_when_idle_ms = 2000\n",
            c.database, c.group_id, c.lane_topic, c.account_topic, c.status_topic
        ),
    )
    .unwrap();
    let log = tmp.join("gantry.log");

    let mut traffic = Traffic::new(
        TrafficConfig {
            records: RECORDS_PER_ROUND * (KILLS + 1),
            cards: 2_000,
            seed: 23,
            ..TrafficConfig::default()
        },
        &net,
    );
    let produce = |traffic: &mut Traffic, n: u64| {
        let mut sent = 0;
        while sent < n {
            let Some(m) = traffic.next_message() else { break };
            let topic = if m.topic == Topic::LaneTx { &c.lane_topic } else { &c.account_topic };
            env.produce(topic, std::str::from_utf8(m.key).unwrap(), m.value, m.timestamp_ms);
            sent += 1;
        }
        env.flush();
    };
    let committed =
        || env.query::<u64>("SELECT count() FROM gantry_batches WHERE phase = 'committed'")[0];
    let in_flight = || {
        env.query::<u64>(
            "SELECT count() FROM (SELECT gantry_partition, batch_seq, countIf(phase = 'committed') AS c FROM gantry_batches GROUP BY gantry_partition, batch_seq) WHERE c = 0",
        )[0]
    };

    let mut killed_after = Vec::new();
    // Deterministic "random" moments (a small LCG), so a failure can be rerun as it was.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next_ms = |max: u64| {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % max
    };
    for kill in 0..KILLS {
        produce(&mut traffic, RECORDS_PER_ROUND);
        let before = committed();
        let mut child = spawn_gantry(&config, &tariff_dir, &log);
        if kill % 3 == 2 {
            // Soon after start: while it joins the group, takes its partitions, recovers.
            std::thread::sleep(Duration::from_millis(next_ms(1500)));
            child.kill().unwrap();
            child.wait().unwrap();
            killed_after.push((committed() - before, "killed early"));
            continue;
        }
        // Wait for the run to be under way (a few more batches committed), then kill it at a
        // point that varies from round to round.
        let started = Instant::now();
        while committed() < before + 1 + kill % 3 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "gantry exited before it was killed; see {}",
                log.display()
            );
            // A hang guard, not a speed check: a restart commits its first batches after the
            // group's session timeout (6 s here), so 300 s means it is stuck.
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "no batch committed in 300 s; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if kill % 2 == 1 {
            // Aim at the landing window: a batch journaled as planned but not yet committed
            // (its rows partly inserted, its offsets not committed). The batch may still
            // commit between this query and the kill; the recovery counts below say which.
            while in_flight() == 0 {
                if let Some(status) = child.try_wait().unwrap() {
                    // It drained this round before a landing was caught: not a failure of
                    // Gantry, only a kill that did not happen (reported below).
                    assert!(status.success(), "gantry failed; see {}", log.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        } else {
            std::thread::sleep(Duration::from_millis(next_ms(400)));
        }
        let drained = child.try_wait().unwrap().is_some();
        if !drained {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        killed_after
            .push((committed() - before, if drained { "drained, not killed" } else { "killed" }));
    }
    // The last run drains everything and exits.
    produce(&mut traffic, u64::MAX);
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    let status = child.wait().unwrap();
    assert!(status.success(), "the last run failed; see {}", log.display());
    eprintln!("batches committed in each round before its end: {killed_after:?}");
    // What the restarts had to do, from their logs: batches replayed from the journal after a
    // checkpoint, and planned batches finished (the crash fell inside their landing).
    let (mut replayed, mut completed) = (0u64, 0u64);
    for line in
        std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("partition recovered"))
    {
        let field = |name: &str| -> u64 {
            let at = line.find(&format!(" {name}=")).map(|i| i + name.len() + 2);
            at.map(|i| {
                line[i..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap()
            })
            .unwrap_or(0)
        };
        replayed += field("replayed");
        completed += field("completed");
    }
    eprintln!(
        "recoveries: {replayed} committed batches replayed, {completed} planned batches completed"
    );
    assert!(
        replayed > 0,
        "no restart replayed a batch: the kills did not exercise recovery; see {}",
        log.display()
    );

    env.assert_settled_exactly_once(&traffic.tally);
    let _ = std::fs::remove_dir_all(tmp);
}
