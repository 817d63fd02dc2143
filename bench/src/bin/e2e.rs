//! End-to-end benchmark: load generator → Kafka → Gantry → ClickHouse on this machine.
//!
//! 1. Pre-loads fresh topics with accounts and `--records` lane records.
//! 2. Baseline: a bare rdkafka consumer (same settings as Gantry's) reads both topics to the
//!    end; its rate is the ceiling for anything that consumes them.
//! 3. Gantry drains the same topics into ClickHouse; rate = messages / time to the last batch
//!    landed. The ratio to the baseline is the headline figure.
//! 4. Latency: on fresh topics, traffic is produced at `--latency-rate-fraction` of Gantry's
//!    measured rate for `--latency-seconds`, stamped with the wall clock, while Gantry runs;
//!    each settled record's Kafka timestamp → batch committed in ClickHouse goes into an
//!    HDR histogram (p50/p99/p999), written to `--out` as CSV (and plotted by plot_latency.py).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use gantry_clickhouse::InsertCompression;
use gantry_core::TariffStore;
use gantry_gen::{Network, Topic, Traffic, TrafficConfig};
use gantry_pipeline::PipelineConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// mimalloc keeps freed memory for reuse: with the system allocator, batch-sized buffers
/// went back to the kernel and came back as fresh zeroed pages (~14% of Gantry's CPU during
/// a drain was the kernel clearing pages).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// Lane records to pre-load. Millions, so the rate is the sustained one: the first
    /// batches of a run pay for growing buffers and tables, and ClickHouse's merges of what
    /// was inserted only reach their steady share after a while.
    #[arg(long, default_value_t = 3_000_000)]
    records: u64,
    #[arg(long, default_value_t = 50_000)]
    cards: usize,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    #[arg(long, default_value_t = 0.5)]
    latency_rate_fraction: f64,
    #[arg(long, default_value_t = 15)]
    latency_seconds: u64,
    /// Gantry's `flush_interval_ms` (default: Gantry's own default).
    #[arg(long)]
    flush_interval_ms: Option<u64>,
    /// How Gantry compresses INSERT bodies: `none` suits ClickHouse on the same host (here).
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    insert_compression: InsertCompression,
    /// Plates sealed as in production (with the test key file), or dropped (no key file):
    /// what sealing costs end to end.
    #[arg(long, value_enum, default_value = "sealed")]
    plates: Plates,
    /// Directory holding the local stack's pid files (`clickhouse.pid`, `tansu.pid`), to
    /// account the services' CPU time during the drain; skipped when absent.
    #[arg(long, default_value = ".stack")]
    stack_dir: PathBuf,
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

struct Run {
    id: String,
    lane: String,
    acct: String,
    status: String,
}

fn setup(args: &Args, id: &str, rt: &tokio::runtime::Runtime) -> anyhow::Result<Run> {
    let run = Run {
        id: id.into(),
        lane: format!("{id}.lane-tx"),
        acct: format!("{id}.account-events"),
        status: format!("{id}.status-list"),
    };
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &args.brokers).create()?;
    let topics: Vec<NewTopic> = [&run.lane, &run.acct, &run.status]
        .iter()
        .map(|t| NewTopic::new(t, args.partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    rt.block_on(gantry_clickhouse::Store::new(&args.clickhouse_url, &run.id).apply_schema())?;
    Ok(run)
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Plates {
    Sealed,
    Dropped,
}

fn pipeline(args: &Args, run: &Run, exit_when_idle_ms: u64) -> PipelineConfig {
    let plate_keys = match args.plates {
        Plates::Sealed => Some(std::sync::Arc::new(
            gantry_pii::Keyring::from_toml(gantry_pii::TEST_KEYS).expect("test keys"),
        )),
        Plates::Dropped => None,
    };
    PipelineConfig {
        plate_keys,
        brokers: args.brokers.clone(),
        clickhouse_url: args.clickhouse_url.clone(),
        lane_topic: run.lane.clone(),
        account_topic: run.acct.clone(),
        status_topic: run.status.clone(),
        group_id: format!("{}-gantry", run.id),
        database: run.id.clone(),
        exit_when_idle_ms,
        insert_compression: args.insert_compression,
        flush_interval_ms: args
            .flush_interval_ms
            .unwrap_or(PipelineConfig::default().flush_interval_ms),
        ..PipelineConfig::default()
    }
}

/// Produces the traffic; `rate` messages/s (0: as fast as possible); `wall_clock`: stamp
/// messages with the time of sending instead of the record's own time.
fn produce(
    args: &Args,
    run: &Run,
    gen: &mut Traffic,
    rate: f64,
    wall_clock: bool,
    max: Duration,
) -> anyhow::Result<u64> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        gantry_kafka::producer_config(&args.brokers).create()?;
    let started = Instant::now();
    let mut sent = 0u64;
    while let Some(m) = gen.next_message() {
        let topic = if m.topic == Topic::LaneTx { &run.lane } else { &run.acct };
        let ts = if wall_clock {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64
        } else {
            m.timestamp_ms
        };
        gantry_kafka::send_waiting(
            &producer,
            BaseRecord::to(topic).key(m.key).payload(m.value).timestamp(ts),
        )?;
        sent += 1;
        if rate > 0.0 && sent.is_multiple_of(64) {
            if let Some(ahead) =
                Duration::from_secs_f64(sent as f64 / rate).checked_sub(started.elapsed())
            {
                std::thread::sleep(ahead);
            }
        }
        if started.elapsed() > max {
            break;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(sent)
}

fn parse_compression(s: &str) -> Result<InsertCompression, String> {
    match s {
        "lz4" => Ok(InsertCompression::Lz4),
        "none" => Ok(InsertCompression::None),
        _ => Err(format!("`{s}`: expected lz4 or none")),
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// CPU seconds of this process (Gantry, during the drain), ClickHouse and Tansu.
fn cpu_snapshot(stack_dir: &std::path::Path) -> [Option<f64>; 3] {
    let pid = |name: &str| {
        std::fs::read_to_string(stack_dir.join(name)).ok().map(|s| s.trim().to_string())
    };
    [
        cpu_seconds("self"),
        pid("clickhouse.pid").and_then(|p| cpu_seconds(&p)),
        pid("tansu.pid").and_then(|p| cpu_seconds(&p)),
    ]
}

fn tariffs(dir: &std::path::Path) -> anyhow::Result<Arc<TariffStore>> {
    Ok(Arc::new(TariffStore::new(TariffStore::load_root(dir, 480)?)))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let net = Network::new(1, 2_000, 24);
    let tariff_dir = std::env::temp_dir().join(format!("gantry-e2e-{stamp}"));
    net.write_tariff_dir(&tariff_dir)?;
    let traffic =
        || TrafficConfig { records: args.records, cards: args.cards, ..TrafficConfig::default() };

    // 1. Pre-load.
    let run = setup(&args, &format!("e2e{stamp}"), &rt)?;
    let t = Instant::now();
    let total = produce(
        &args,
        &run,
        &mut Traffic::new(traffic(), &net),
        0.0,
        false,
        Duration::from_secs(3600),
    )?;
    println!("produced {total} messages in {:.1} s", t.elapsed().as_secs_f64());

    // 2. Baseline: a bare consumer, same librdkafka settings.
    let consumer: BaseConsumer =
        gantry_kafka::reader_config(&args.brokers, &format!("{}-raw", run.id)).create()?;
    consumer.subscribe(&[&run.lane, &run.acct])?;
    let raw_cpu_before = cpu_seconds("self");
    let (mut n, mut first) = (0u64, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < total && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            n += 1;
        }
    }
    let raw_secs = first.context("baseline read nothing")?.elapsed().as_secs_f64();
    let raw_rate = n as f64 / raw_secs;
    drop(consumer);
    // What consuming alone costs (librdkafka's threads included): the floor of Gantry's own
    // CPU per message.
    let raw_cpu_us =
        raw_cpu_before.zip(cpu_seconds("self")).map(|(b, a)| (a - b) * 1e6 / n.max(1) as f64);
    println!(
        "baseline: bare consumer read {n} messages in {raw_secs:.2} s = {raw_rate:.0} msg/s, cpu {} µs per message",
        raw_cpu_us.map_or("?".into(), |u| format!("{u:.2}"))
    );

    // 3. Gantry drains the same topics into ClickHouse.
    let cpu_before = cpu_snapshot(&args.stack_dir);
    let summary = gantry_pipeline::run(
        pipeline(&args, &run, 2_000),
        tariffs(&tariff_dir)?,
        Arc::new(AtomicBool::new(false)),
    )?;
    let cpu_after = cpu_snapshot(&args.stack_dir);
    let secs = summary.until_last_landed.as_secs_f64();
    let rate = summary.messages as f64 / secs;
    println!("gantry: {} messages into ClickHouse in {secs:.2} s = {rate:.0} msg/s ({:.2}x the bare consumer)", summary.messages, rate / raw_rate);
    // Where the two cores went during the drain (including the idle wait before stopping,
    // and ClickHouse's background merges of what was inserted).
    let mut cpu_line =
        raw_cpu_us.map_or(String::new(), |u| format!("baseline_cpu_us_per_msg={u:.2}\n"));
    for (i, name) in ["gantry", "clickhouse", "tansu"].iter().enumerate() {
        if let (Some(b), Some(a)) = (cpu_before[i], cpu_after[i]) {
            let (used, per_msg_us) = (a - b, (a - b) * 1e6 / summary.messages as f64);
            cpu_line.push_str(&format!(
                "{name}_cpu_s={used:.1}\n{name}_cpu_us_per_msg={per_msg_us:.2}\n"
            ));
            println!("  cpu {name}: {used:.1} s = {per_msg_us:.2} µs per message");
        }
    }

    // 4. Latency at a sustained rate below saturation.
    let lat = setup(&args, &format!("e2elat{stamp}"), &rt)?;
    let target = rate * args.latency_rate_fraction;
    let cfg = pipeline(&args, &lat, 3_000);
    let store = tariffs(&tariff_dir)?;
    let runner = std::thread::spawn(move || {
        gantry_pipeline::run(cfg, store, Arc::new(AtomicBool::new(false)))
    });
    // Accounts first (not timed), then lane traffic at the target rate.
    let mut gen = Traffic::new(
        TrafficConfig { records: (target * args.latency_seconds as f64) as u64, ..traffic() },
        &net,
    );
    let sent = produce(
        &args,
        &lat,
        &mut gen,
        target,
        true,
        Duration::from_secs(args.latency_seconds + 60),
    )?;
    let lsum = runner.join().map_err(|_| anyhow::anyhow!("gantry thread panicked"))??;
    let h = &lsum.latency_ms;
    println!(
        "latency at {target:.0} msg/s ({sent} messages): p50 {} ms, p99 {} ms, p999 {} ms, max {} ms ({} settled records)",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    );
    std::fs::create_dir_all(&args.out)?;
    let mut csv = String::from("quantile,latency_ms\n");
    for q in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0] {
        csv.push_str(&format!("{q},{}\n", h.value_at_quantile(q)));
    }
    std::fs::write(args.out.join("e2e-latency.csv"), csv)?;
    std::fs::write(
        args.out.join("e2e-summary.txt"),
        format!(
            "records={}\nmessages={}\nbaseline_msg_per_s={raw_rate:.0}\ngantry_msg_per_s={rate:.0}\nratio={:.2}\nlatency_rate_msg_per_s={target:.0}\np50_ms={}\np99_ms={}\np999_ms={}\n",
            args.records,
            summary.messages,
            rate / raw_rate,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        ) + &cpu_line,
    )?;
    // Tansu's memory:// storage keeps every message until its topic is deleted.
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &args.brokers).create()?;
    for r in [&run, &lat] {
        let _ =
            rt.block_on(admin.delete_topics(&[&r.lane, &r.acct, &r.status], &AdminOptions::new()));
    }
    for db in [&run.id, &lat.id] {
        let _ =
            rt.block_on(gantry_clickhouse::Store::new(&args.clickhouse_url, db).drop_database());
    }
    let _ = std::fs::remove_dir_all(&tariff_dir);
    Ok(())
}
