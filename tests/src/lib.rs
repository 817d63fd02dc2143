//! Helpers for integration tests: each test gets its own topics, consumer group and
//! ClickHouse database on the local stack (`deploy/local/stack up`), talks to them only
//! through the Kafka protocol and ClickHouse's HTTP interface, and drops its database at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use gantry_core::TariffStore;
use gantry_pipeline::{PipelineConfig, RunSummary};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

pub const BROKERS: &str = "127.0.0.1:9092";
pub const CLICKHOUSE: &str = "http://127.0.0.1:8123";

pub struct Env {
    pub cfg: PipelineConfig,
    pub store: gantry_clickhouse::Store,
    rt: tokio::runtime::Runtime,
    producer: ThreadedProducer<DefaultProducerContext>,
}

/// A fixture tariff root from the core crate's tests.
pub fn fixture_tariffs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/gantry-core/tests/fixtures/tariffs")
}

impl Env {
    /// Fresh topics (`partitions` each), group and database named after `test`.
    pub fn new(test: &str, partitions: i32) -> Env {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_test_writer().try_init();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        let id = format!("{test}_{}_{nanos}", std::process::id());
        let cfg = PipelineConfig {
            lane_topic: format!("t.{id}.lane-tx"),
            account_topic: format!("t.{id}.account-events"),
            status_topic: format!("t.{id}.status-list"),
            group_id: format!("g.{id}"),
            database: format!("t_{id}"),
            exit_when_idle_ms: 1_500,
            flush_interval_ms: 200,
            merge_idle_ms: 50,
            ..PipelineConfig::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", BROKERS).create().unwrap();
        let topics: Vec<NewTopic> =
            [&cfg.lane_topic, &cfg.account_topic, &cfg.status_topic].iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
        for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap() {
            r.unwrap();
        }
        let store = gantry_clickhouse::Store::new(CLICKHOUSE, &cfg.database);
        rt.block_on(store.apply_schema()).unwrap();
        let producer = gantry_kafka::producer_config(BROKERS).create().unwrap();
        Env { cfg, store, rt, producer }
    }

    pub fn produce_lane(&self, key: &str, value: &str, ts: i64) {
        self.produce(&self.cfg.lane_topic.clone(), key, value.as_bytes(), ts)
    }

    pub fn produce_account(&self, key: &str, value: &str, ts: i64) {
        self.produce(&self.cfg.account_topic.clone(), key, value.as_bytes(), ts)
    }

    pub fn produce(&self, topic: &str, key: &str, value: &[u8], ts: i64) {
        self.producer.send(BaseRecord::to(topic).key(key).payload(value).timestamp(ts)).map_err(|(e, _)| e).unwrap();
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Runs Gantry until the topics are drained.
    pub fn run(&self, cfg: &PipelineConfig, tariff_root: &Path) -> RunSummary {
        self.flush();
        let set = TariffStore::load_root(tariff_root, cfg.network_utc_offset_min).unwrap();
        gantry_pipeline::run(cfg.clone(), Arc::new(TariffStore::new(set)), Arc::new(AtomicBool::new(false))).expect("gantry run")
    }

    pub fn query<T: clickhouse::RowOwned + clickhouse::RowRead>(&self, sql: &str) -> Vec<T> {
        self.rt.block_on(self.store.query_client().query(sql).fetch_all::<T>()).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn exec(&self, sql: &str) {
        self.rt.block_on(self.store.query_client().query(sql).execute()).unwrap();
    }

    /// Every message of the status-list topic as (key, value).
    pub fn status_messages(&self) -> Vec<(String, String)> {
        let c: BaseConsumer = gantry_kafka::consumer_config(BROKERS, &format!("{}-status-reader", self.cfg.group_id)).create().unwrap();
        c.subscribe(&[&self.cfg.status_topic]).unwrap();
        let mut out = Vec::new();
        let mut idle = 0;
        while idle < 30 {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    idle = 0;
                    out.push((String::from_utf8_lossy(m.key().unwrap_or(&[])).into_owned(), String::from_utf8_lossy(m.payload().unwrap_or(&[])).into_owned()));
                }
                _ => idle += 1,
            }
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::env::var_os("GANTRY_TEST_KEEP_DB").is_some() {
            return;
        }
        let _ = self.rt.block_on(self.store.drop_database());
    }
}
