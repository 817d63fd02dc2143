//! Input memory under 10 MB messages with ClickHouse refusing every batch, against the real
//! broker and ClickHouse. A test binary of its own: it puts 480 MB through the shared
//! broker, which beside a dozen parallel tests slowed their fetches until librdkafka
//! reported every broker down.

#![forbid(unsafe_code)]

use std::process::Child;
use std::time::Duration;

mod common;
use common::*;

/// The peak resident memory (`VmHWM`, KiB) of a running process.
fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Lane messages of 10 MB each (a CPC record with a 10 MB field it does not read), 48 of
/// them, after the generated traffic is settled, while ClickHouse refuses every batch (a
/// view on the journal that throws) and batches are tiny (10 rows), so each worker stops
/// taking input at once: Gantry then holds at most `worker_buffer_bytes_max` (64 MiB here)
/// of input per partition, so its peak memory stays near that however much waits in the
/// broker. Then ClickHouse accepts again and everything is settled exactly once. Without
/// the budget (only the channel's 16 chunks of up to 32 MiB each), the peak here was 480
/// MiB — the whole 480 MB waiting — against 225 MiB with it.
#[test]
fn input_memory_holds_its_cap_with_10_mb_messages_and_clickhouse_stalled() {
    const BIG: usize = 48;
    const CAP_MIB: u64 = 64;
    let (env, tariff_dir, net, mut traffic) = setup("memory_cap", 2, 107);
    env.produce_traffic(&mut traffic, u64::MAX);
    env.run(&env.cfg, &tariff_dir);
    env.exec("CREATE MATERIALIZED VIEW block_landing ENGINE = Memory AS SELECT throwIf(count() > 0) AS blocked FROM gantry_batches");
    let big = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.cfg.brokers)
        .set("partitioner", "murmur2_random")
        .set("message.max.bytes", "16777216")
        .create::<rdkafka::producer::ThreadedProducer<_>>()
        .unwrap();
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let time = gantry_core::time::format_timestamp(now_ms - 60_000, gantry_gen::OFFSET_MIN);
    let pad = "x".repeat(10 << 20);
    let unit = &net.units[0].id;
    for i in 0..BIG {
        let record = format!(
            r#"{{"tradeId":"BIG-{i}","gantryId":"G-BIG","tollIntervalId":"{unit}","transTime":"{time}","mediaType":2,"vehicleType":1,"pad":"{pad}"}}"#
        );
        let key = format!("big-{i}");
        let m = rdkafka::producer::BaseRecord::to(&env.cfg.lane_topic)
            .key(&key)
            .payload(&record)
            .timestamp(now_ms);
        big.send(m).map_err(|(e, _)| e).unwrap();
        rdkafka::producer::Producer::flush(&big, Duration::from_secs(60)).unwrap();
    }
    traffic.tally.valid += BIG as u64;
    let config = env.write_config(&format!(
        "session_timeout_ms = 6000\nbatch_rows_max = 10\nworker_buffer_bytes_max = {}\n",
        CAP_MIB << 20
    ));
    let log = config.with_file_name("memory.log");
    let mut child = spawn_gantry(&config, &tariff_dir, &log);
    wait_for(&mut child, &log, "a failed landing", || {
        log_text(&log).contains("batches not landed; retrying")
    });
    // Long enough for the poller to fetch all it may while every worker is stalled.
    std::thread::sleep(Duration::from_secs(15));
    let peak_mib = peak_rss_kib(&child) / 1024;
    eprintln!(
        "peak resident memory while stalled: {peak_mib} MiB (cap {CAP_MIB} MiB per partition)"
    );
    env.exec("DROP TABLE block_landing");
    let lane_messages = traffic.tally.lane_records();
    let processed = || lane_records_processed(&env);
    wait_for(&mut child, &log, "every lane record processed", || processed() >= lane_messages);
    stop_cleanly(&mut child, &log);
    // Two partitions' budgets, librdkafka's queue (64 MiB), a chunk being filled (≤ 32 MiB
    // plus one message) and the process's own ~100 MiB (engine, batches, runtime): the
    // input waiting in the broker (480 MB here) is not in it.
    assert!(peak_mib < 2 * CAP_MIB + 64 + 48 + 100, "peak {peak_mib} MiB");
    env.assert_settled_exactly_once(&traffic.tally);
}
