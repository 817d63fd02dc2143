//! The finance and CRM API under load: `--records` generated lane records settled by the
//! real pipeline into a fresh database (or `--database` of an earlier run), then `gantry
//! serve` in this process answering `--clients` concurrent clients for `--seconds`, each
//! looping over a mix of endpoints with random days, customers and cards. Latency per
//! endpoint in an HDR histogram (p50/p99/max), requests per second, and the baseline from
//! the same run: `/health/ready`, the server's cheapest round trip through ClickHouse.
//!
//! Everything shares this machine's two cores: ClickHouse, the server and the clients.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use gantry_core::TariffStore;
use gantry_gen::{Network, Topic, Traffic, TrafficConfig};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// Lane records to settle first (10M: the size).
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    #[arg(long, default_value_t = 200_000)]
    cards: usize,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Reuse this database (from an earlier run) instead of loading a new one.
    #[arg(long)]
    database: Option<String>,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of the mixed run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds each endpoint is then asked alone by `--clients` clients (0: skip).
    #[arg(long, default_value_t = 10)]
    seconds_each: u64,
}

const KEY: &str = "bench-key";

/// The endpoints asked, by weight: card lookups and statements are what a service desk
/// does all day; the finance reports are asked now and then; segments is a batch job.
const MIX: &[(&str, u32)] = &[
    ("health", 2),
    ("card", 6),
    ("usage", 4),
    ("statement", 4),
    ("settlements_daily", 2),
    ("clearing", 1),
    ("reconciliation", 1),
    ("arrears", 1),
    ("churn", 1),
    ("segments", 1),
];

type Mix = Vec<(&'static str, u32)>;

/// An endpoint's latencies (µs) and errors.
type Latencies = (String, Histogram<u64>, u64);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let database = match &args.database {
        Some(d) => d.clone(),
        None => load(&args, &rt)?,
    };
    let store = gantry_clickhouse::Store::new(&args.clickhouse_url, &database);
    let q = store.query_client();
    let cards: Vec<String> = rt.block_on(
        q.query("SELECT card_id FROM ledger WHERE kind = 'open' ORDER BY card_id").fetch_all(),
    )?;
    let customers: Vec<String> = rt.block_on(
        q.query("SELECT DISTINCT customer_id FROM ledger WHERE kind = 'open' ORDER BY customer_id")
            .fetch_all(),
    )?;
    let days: Vec<String> = rt.block_on(
        q.query("SELECT DISTINCT toString(trade_date) AS d FROM settlement_splits ORDER BY d")
            .fetch_all(),
    )?;
    let rows: Vec<u64> = rt.block_on(q.query("SELECT count() FROM settlements").fetch_all())?;
    println!(
        "database {database}: {} settlements, {} cards, {} customers, {} days",
        rows[0],
        cards.len(),
        customers.len(),
        days.len()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = gantry_api::config::ServeConfig {
        listen: format!("127.0.0.1:{port}"),
        clickhouse_url: args.clickhouse_url.clone(),
        database: database.clone(),
        brokers: args.brokers.clone(),
        api_keys: vec![gantry_api::config::ApiKeyConfig {
            id: "bench".into(),
            sha256: gantry_api::auth::key_hash(KEY),
            roles: vec![gantry_api::auth::Role::Finance, gantry_api::auth::Role::Crm],
        }],
        ..Default::default()
    };
    rt.spawn(gantry_api::serve(cfg, std::future::pending()));
    std::thread::sleep(Duration::from_millis(500));
    let base = format!("http://127.0.0.1:{port}");
    let month = gantry_core::time::format_timestamp(now_ms(), 480)[..7].to_string();
    let today = gantry_core::time::format_timestamp(now_ms(), 480)[..10].to_string();
    let targets = Arc::new(Targets { base, cards, customers, days, month, today });

    // The first answer of the cached questions (one scan each, then kept; see
    // `gantry_api::cache`), timed once before the runs.
    for endpoint in ["reconciliation", "churn", "segments"] {
        let url = format!("{}{}", targets.base, targets.path(endpoint, 0));
        let began = Instant::now();
        let r = rt.block_on(reqwest::Client::new().get(&url).bearer_auth(KEY).send())?;
        println!(
            "first {endpoint}: {} in {:.0} ms",
            r.status(),
            began.elapsed().as_secs_f64() * 1e3
        );
    }
    let mix: Mix = MIX.to_vec();
    let (hists, secs) = phase(&rt, &targets, &mix, args.clients, args.seconds)?;
    println!("mixed: {} clients, {secs:.0} s; latency in ms (baseline: health = /health/ready, one SELECT 1 through the server)", args.clients);
    print_table(&hists, secs);
    if args.seconds_each > 0 {
        println!("each endpoint alone: {} clients, {} s each", args.clients, args.seconds_each);
        let mut all = Vec::new();
        for (endpoint, _) in MIX {
            let (h, secs) =
                phase(&rt, &targets, &vec![(*endpoint, 1)], args.clients, args.seconds_each)?;
            all.extend(h.into_iter().filter(|x| !x.1.is_empty()).map(|(n, h, e)| (n, h, e, secs)));
        }
        let health =
            all.iter().find(|h| h.0 == "health").map_or(1, |h| h.1.value_at_quantile(0.5).max(1));
        print_header();
        for (name, h, errors, secs) in &all {
            print_row(name, h, *errors, *secs, health);
        }
    }
    Ok(())
}

/// `clients` clients asking `mix` for `seconds`; each endpoint's latencies.
fn phase(
    rt: &tokio::runtime::Runtime,
    targets: &Arc<Targets>,
    mix: &Mix,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Vec<Latencies>, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(rt.spawn(client(c as u64, targets.clone(), mix.clone(), stop.clone())));
    }
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut hists: Vec<Latencies> = Vec::new();
    for c in tasks {
        for (name, h, errors) in rt.block_on(c)?? {
            match hists.iter_mut().find(|x| x.0 == name) {
                Some(x) => {
                    x.1.add(&h)?;
                    x.2 += errors;
                }
                None => hists.push((name, h, errors)),
            }
        }
    }
    Ok((hists, started.elapsed().as_secs_f64()))
}

fn print_header() {
    println!(
        "{:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>12}",
        "endpoint", "req/s", "p50", "p99", "max", "errors", "n", "p50/health"
    );
}

fn print_row(name: &str, h: &Histogram<u64>, errors: u64, secs: f64, health_p50: u64) {
    println!(
        "{name:<18} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {errors:>8} {:>7} {:>11.1}x",
        h.len() as f64 / secs,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len(),
        h.value_at_quantile(0.5) as f64 / health_p50 as f64
    );
}

fn print_table(hists: &[Latencies], secs: f64) {
    let health_p50 =
        hists.iter().find(|h| h.0 == "health").map_or(1, |h| h.1.value_at_quantile(0.5).max(1));
    print_header();
    let mut total = 0;
    for (name, h, errors) in hists {
        total += h.len();
        print_row(name, h, *errors, secs, health_p50);
    }
    println!("all: {:.1} req/s", total as f64 / secs);
}

struct Targets {
    base: String,
    cards: Vec<String>,
    customers: Vec<String>,
    days: Vec<String>,
    month: String,
    today: String,
}

impl Targets {
    fn path(&self, endpoint: &str, r: u64) -> String {
        let pick = |v: &Vec<String>| v[(r % v.len().max(1) as u64) as usize].clone();
        match endpoint {
            "health" => "/health/ready".into(),
            "card" => format!("/v1/cards/{}", pick(&self.cards)),
            "usage" => format!(
                "/v1/customers/{}/usage?from={}&to={}",
                pick(&self.customers),
                self.days[0],
                self.days[self.days.len() - 1]
            ),
            "statement" => {
                format!("/v1/customers/{}/statement?month={}", pick(&self.customers), self.month)
            }
            "settlements_daily" => format!("/v1/settlements/daily?date={}", pick(&self.days)),
            "clearing" => format!("/v1/clearing?date={}", pick(&self.days)),
            "reconciliation" => format!("/v1/reconciliation?date={}", self.today),
            "arrears" => format!("/v1/arrears?date={}", pick(&self.days)),
            "segments" => {
                format!("/v1/customers/segments?as_of={}&limit=100", self.days[self.days.len() - 1])
            }
            _ => format!(
                "/v1/customers/churn-risk?as_of={}&limit=100",
                self.days[self.days.len() - 1]
            ),
        }
    }
}

type Result3 = anyhow::Result<Vec<Latencies>>;

async fn client(seed: u64, t: Arc<Targets>, mix: Mix, stop: Arc<AtomicBool>) -> Result3 {
    let http = reqwest::Client::new();
    let mut out: Vec<Latencies> = mix
        .iter()
        .map(|(n, _)| {
            (n.to_string(), Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"), 0)
        })
        .collect();
    let weights: u32 = mix.iter().map(|m| m.1).sum();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.load(Ordering::Relaxed) {
        // xorshift: cheap and reproducible per client.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut w = (x % weights as u64) as u32;
        let i = mix.iter().position(|m| {
            let hit = w < m.1;
            w = w.saturating_sub(m.1);
            hit
        });
        let i = i.unwrap_or(0);
        let url = format!("{}{}", t.base, t.path(mix[i].0, x >> 20));
        let began = Instant::now();
        let r = http.get(&url).bearer_auth(KEY).send().await;
        let ok = match r {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            Ok(r) => {
                if out[i].2 == 0 {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    eprintln!("{url}: {status} {}", &body[..body.len().min(300)]);
                }
                false
            }
            Err(e) => {
                if out[i].2 == 0 {
                    eprintln!("{url}: {e}");
                }
                false
            }
        };
        out[i].1.record(began.elapsed().as_micros().max(1) as u64)?;
        out[i].2 += u64::from(!ok);
    }
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Fresh topics and database, `--records` of generated traffic, the pipeline until drained.
fn load(args: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<String> {
    let id = format!("api{}", now_ms() / 1000);
    let (lane, acct, status) =
        (format!("{id}.lane-tx"), format!("{id}.account-events"), format!("{id}.status-list"));
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &args.brokers).create()?;
    let topics: Vec<NewTopic> = [&lane, &acct, &status]
        .iter()
        .map(|t| NewTopic::new(t, args.partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    rt.block_on(gantry_clickhouse::Store::new(&args.clickhouse_url, &id).apply_schema())?;
    let net = Network::new(1, 2_000, 24);
    let tariff_dir = std::env::temp_dir().join(format!("gantry-api-bench-{id}"));
    net.write_tariff_dir(&tariff_dir)?;
    let mut traffic = Traffic::new(
        TrafficConfig {
            records: args.records,
            cards: args.cards,
            days: 60,
            ..TrafficConfig::default()
        },
        &net,
    );
    let producer: ThreadedProducer<DefaultProducerContext> =
        gantry_kafka::producer_config(&args.brokers).create()?;
    let t = Instant::now();
    let mut sent = 0u64;
    while let Some(m) = traffic.next_message() {
        let topic = if m.topic == Topic::LaneTx { &lane } else { &acct };
        gantry_kafka::send_waiting(
            &producer,
            BaseRecord::to(topic).key(m.key).payload(m.value).timestamp(m.timestamp_ms),
        )?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(120))?;
    println!("produced {sent} messages in {:.0} s", t.elapsed().as_secs_f64());
    let cfg = gantry_pipeline::PipelineConfig {
        brokers: args.brokers.clone(),
        clickhouse_url: args.clickhouse_url.clone(),
        lane_topic: lane,
        account_topic: acct,
        status_topic: status,
        group_id: format!("{id}-gantry"),
        database: id.clone(),
        exit_when_idle_ms: 3_000,
        plate_keys: Some(Arc::new(gantry_pii::Keyring::from_toml(gantry_pii::TEST_KEYS)?)),
        ..Default::default()
    };
    let set = TariffStore::load_root(&tariff_dir, cfg.network_utc_offset_min)?;
    let t = Instant::now();
    gantry_pipeline::run(cfg, Arc::new(TariffStore::new(set)), Arc::new(AtomicBool::new(false)))?;
    println!("settled in {:.0} s into database {id}", t.elapsed().as_secs_f64());
    Ok(id)
}
