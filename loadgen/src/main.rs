//! `gantry-loadgen`: sends `gantry-gen` traffic to Kafka (accounts first, then lane records
//! and top-ups in time order) at a target rate or as fast as possible, with a progress bar,
//! a closing summary and a tally file (`--tally`) of what was sent, so a run can be checked.
//!
//! The network (tariff) and the traffic come from the same seed and sizes: write the tariff
//! with `gantry-loadgen tariff` using the same `--units`/`--owners`/`--seed`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gantry_gen::{Network, Tally, Topic, Traffic, TrafficConfig};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// mimalloc keeps freed memory for reuse: with the system allocator, batch-sized buffers
/// went back to the kernel and came back as fresh zeroed pages (~14% of Gantry's CPU during
/// a drain was the kernel clearing pages).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gantry-loadgen", about = "Realistic ETC traffic for Gantry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct NetworkArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tolling units in the generated network.
    #[arg(long, default_value_t = 2_000)]
    units: usize,
    /// Road owners.
    #[arg(long, default_value_t = 24)]
    owners: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Create topics through the Kafka admin API (existing ones are left as they are).
    Topics {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        names: Vec<String>,
    },
    /// Write the network's tariff version directory.
    Tariff {
        #[command(flatten)]
        net: NetworkArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write lane records as JSON lines (for `gantry price`).
    Lanes {
        #[command(flatten)]
        net: NetworkArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Produce accounts and traffic to Kafka.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    net: NetworkArgs,
    #[command(flatten)]
    traffic: TrafficArgs,
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "gantry.lane-tx")]
    lane_topic: String,
    #[arg(long, default_value = "gantry.account-events")]
    account_topic: String,
    /// Messages per second; 0 sends as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Write the tally (JSON) here.
    #[arg(long)]
    tally: Option<PathBuf>,
    /// No progress bar (CI logs).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct TrafficArgs {
    #[arg(long, default_value_t = 300_000)]
    records: u64,
    #[arg(long, default_value_t = 20_000)]
    cards: usize,
    #[arg(long, default_value_t = 14)]
    days: u32,
    #[arg(long, default_value_t = 0.02)]
    duplicate_rate: f64,
    #[arg(long, default_value_t = 0.002)]
    bad_rate: f64,
    #[arg(long, default_value_t = 0.001)]
    unknown_card_rate: f64,
    #[arg(long, default_value_t = 0.01)]
    topup_rate: f64,
}

impl TrafficArgs {
    fn config(&self, seed: u64) -> TrafficConfig {
        TrafficConfig {
            seed,
            records: self.records,
            cards: self.cards,
            days: self.days,
            duplicate_rate: self.duplicate_rate,
            bad_rate: self.bad_rate,
            unknown_card_rate: self.unknown_card_rate,
            topup_rate: self.topup_rate,
            ..TrafficConfig::default()
        }
    }
}

fn tally_json(t: &Tally, elapsed: Duration) -> serde_json::Value {
    serde_json::json!({
        "opens": t.opens, "topups": t.topups, "topupAmount": t.topup_amount,
        "laneRecords": t.lane_records(), "valid": t.valid, "duplicates": t.duplicates,
        "bad": t.bad, "unknownCard": t.unknown_card, "seconds": elapsed.as_secs_f64(),
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Topics { brokers, partitions, names } => {
            create_topics(&brokers, partitions, &names)
        }
        Command::Tariff { net, out } => {
            Network::new(net.seed, net.units, net.owners)
                .write_tariff_dir(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("tariff written to {}", out.display());
            Ok(())
        }
        Command::Lanes { net, traffic, out } => write_lanes(&net, &traffic, &out),
        Command::Run(args) => send(args),
    }
}

/// `topics`: creates them through the Kafka admin API; existing ones are left alone.
fn create_topics(brokers: &str, partitions: i32, names: &[String]) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let topics: Vec<NewTopic> =
        names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        match r {
            Ok(t) => eprintln!("created {t} ({partitions} partitions)"),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("{t} exists")
            }
            Err((t, e)) => anyhow::bail!("creating {t}: {e}"),
        }
    }
    Ok(())
}

/// `lanes`: lane records as JSON lines, for `gantry price`.
fn write_lanes(net: &NetworkArgs, traffic: &TrafficArgs, out: &Path) -> anyhow::Result<()> {
    let network = Network::new(net.seed, net.units, net.owners);
    let (lines, tally) = gantry_gen::lane_lines(traffic.config(net.seed), &network);
    let mut body = lines.join(&b'\n');
    body.push(b'\n');
    std::fs::write(out, body).with_context(|| format!("writing {}", out.display()))?;
    let t = tally_json(&tally, Duration::ZERO);
    eprintln!("{} lane records written to {}: {t}", lines.len(), out.display());
    Ok(())
}

/// Messages between updates of the progress bar and checks of the rate.
const PACE_EVERY_MESSAGES: u64 = 1024;

/// `run`: accounts and traffic to Kafka at `rate`, then the tally.
fn send(args: RunArgs) -> anyhow::Result<()> {
    let network = Network::new(args.net.seed, args.net.units, args.net.owners);
    let cfg = args.traffic.config(args.net.seed);
    let total = cfg.records + cfg.cards as u64;
    let mut gen = Traffic::new(cfg, &network);
    let producer: ThreadedProducer<DefaultProducerContext> =
        gantry_kafka::producer_config(&args.brokers).create()?;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} {msg}")
            .expect("template"),
    );
    let started = Instant::now();
    let mut sent = 0u64;
    while let Some(m) = gen.next_message() {
        let topic = if m.topic == Topic::LaneTx { &args.lane_topic } else { &args.account_topic };
        let record = BaseRecord::to(topic).key(m.key).payload(m.value).timestamp(m.timestamp_ms);
        gantry_kafka::send_waiting(&producer, record)?;
        sent += 1;
        if sent.is_multiple_of(PACE_EVERY_MESSAGES) {
            bar.set_position(sent);
            if args.rate > 0 {
                let due = Duration::from_secs_f64(sent as f64 / args.rate as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let t = tally_json(&gen.tally, elapsed);
    let rate = sent as f64 / elapsed.as_secs_f64();
    eprintln!("sent {sent} messages in {:.1} s ({rate:.0} msg/s): {t}", elapsed.as_secs_f64());
    if let Some(p) = args.tally {
        std::fs::write(&p, serde_json::to_vec_pretty(&t)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
