//! Helpers for integration tests: each test gets its own topics, consumer group and
//! ClickHouse database on the local stack (`deploy/local/stack up`), talks to them only
//! through the Kafka protocol and ClickHouse's HTTP interface, and drops its database at the end.

#![forbid(unsafe_code)]

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
        Env::with_brokers(test, partitions, BROKERS)
    }

    /// [`Env::new`] on another broker than the shared one (a test's own, which it may stop).
    pub fn with_brokers(test: &str, partitions: i32, brokers: &str) -> Env {
        Env::with_services(test, partitions, brokers, CLICKHOUSE)
    }

    /// [`Env::new`] on other services than the shared ones (a test's own, which it may stop).
    pub fn with_services(test: &str, partitions: i32, brokers: &str, clickhouse: &str) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                % 1_000_000_000;
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
            brokers: brokers.to_string(),
            clickhouse_url: clickhouse.to_string(),
            ..PipelineConfig::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let admin: AdminClient<DefaultClientContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
        let topics: Vec<NewTopic> = [&cfg.lane_topic, &cfg.account_topic, &cfg.status_topic]
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap() {
            r.unwrap();
        }
        let store = gantry_clickhouse::Store::new(clickhouse, &cfg.database);
        rt.block_on(store.apply_schema()).unwrap();
        let producer = gantry_kafka::producer_config(brokers).create().unwrap();
        Env { cfg, store, rt, producer }
    }

    pub fn produce_lane(&self, key: &str, value: &str, ts: i64) {
        self.produce(&self.cfg.lane_topic.clone(), key, value.as_bytes(), ts)
    }

    pub fn produce_account(&self, key: &str, value: &str, ts: i64) {
        self.produce(&self.cfg.account_topic.clone(), key, value.as_bytes(), ts)
    }

    pub fn produce(&self, topic: &str, key: &str, value: &[u8], ts: i64) {
        self.producer
            .send(BaseRecord::to(topic).key(key).payload(value).timestamp(ts))
            .map_err(|(e, _)| e)
            .unwrap();
    }

    /// Sends to one partition, whatever the key would choose.
    pub fn produce_to(&self, topic: &str, partition: i32, key: &str, value: &[u8], ts: i64) {
        self.producer
            .send(BaseRecord::to(topic).partition(partition).key(key).payload(value).timestamp(ts))
            .map_err(|(e, _)| e)
            .unwrap();
    }

    /// Sends `records` lane records of generated traffic (with the accounts and top-ups they
    /// come with) and returns the generator for more.
    pub fn produce_traffic(&self, traffic: &mut gantry_gen::Traffic, records: u64) {
        let mut lane = 0;
        while lane < records {
            let Some(m) = traffic.next_message() else { break };
            let topic = match m.topic {
                gantry_gen::Topic::LaneTx => {
                    lane += 1;
                    &self.cfg.lane_topic
                }
                gantry_gen::Topic::AccountEvents => &self.cfg.account_topic,
            };
            let key = std::str::from_utf8(m.key).expect("generated keys are text");
            self.produce(topic, key, m.value, m.timestamp_ms);
        }
        self.flush();
    }

    /// A `gantry run` config file for this environment's topics, group and database, with
    /// `extra` TOML lines; written under the system's temp dir.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let c = &self.cfg;
        let dir = std::env::temp_dir().join(format!("gantry-test-{}", c.database));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gantry.toml");
        let text = format!(
            "brokers = \"{}\"\nclickhouse_url = \"{}\"\ndatabase = \"{}\"\n\
             group_id = \"{}\"\nlane_topic = \"{}\"\naccount_topic = \"{}\"\n\
             status_topic = \"{}\"\n{extra}\n",
            c.brokers,
            c.clickhouse_url,
            c.database,
            c.group_id,
            c.lane_topic,
            c.account_topic,
            c.status_topic
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Creates the database and schema (again, after a test dropped it).
    pub fn apply_schema(&self) {
        self.rt.block_on(self.store.apply_schema()).unwrap();
    }

    /// Runs Gantry until the topics are drained.
    pub fn run(&self, cfg: &PipelineConfig, tariff_root: &Path) -> RunSummary {
        self.flush();
        let set = TariffStore::load_root(tariff_root, cfg.network_utc_offset_min).unwrap();
        gantry_pipeline::run(
            cfg.clone(),
            Arc::new(TariffStore::new(set)),
            Arc::new(AtomicBool::new(false)),
        )
        .expect("gantry run")
    }

    pub fn query<T: clickhouse::RowOwned + clickhouse::RowRead>(&self, sql: &str) -> Vec<T> {
        self.rt
            .block_on(self.store.query_client().query(sql).fetch_all::<T>())
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs a future of the test's own (a `Store` call, say) on the environment's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn exec(&self, sql: &str) {
        self.rt.block_on(self.store.query_client().query(sql).execute()).unwrap();
    }

    /// A query's answer as text (`TSV`), for comparing with golden files.
    pub fn text(&self, sql: &str) -> String {
        let bytes = self.rt.block_on(async {
            self.store.query_client().query(sql).fetch_bytes("TSV")?.collect().await
        });
        String::from_utf8(bytes.unwrap_or_else(|e| panic!("{sql}: {e}")).to_vec())
            .expect("UTF-8 answer")
    }

    /// Runs an INSERT whose body is given as is (e.g. `... FORMAT Native`).
    pub fn insert_body(&self, sql: &str, body: Vec<u8>) {
        self.rt
            .block_on(async {
                let mut ins = self.store.query_client().insert_formatted_with(sql.to_string());
                ins.send(body.into()).await?;
                ins.end().await
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every message of the status-list topic as (key, value).
    pub fn status_messages(&self) -> Vec<(String, String)> {
        let c: BaseConsumer = gantry_kafka::reader_config(
            &self.cfg.brokers,
            &format!("{}-status-reader", self.cfg.group_id),
        )
        .create()
        .unwrap();
        c.subscribe(&[&self.cfg.status_topic]).unwrap();
        let mut out = Vec::new();
        let mut idle = 0;
        while idle < 30 {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    idle = 0;
                    out.push((
                        String::from_utf8_lossy(m.key().unwrap_or(&[])).into_owned(),
                        String::from_utf8_lossy(m.payload().unwrap_or(&[])).into_owned(),
                    ));
                }
                _ => idle += 1,
            }
        }
        out
    }

    /// Checks that the whole generated stream was settled exactly once: every valid record
    /// settled once, every re-sent one counted as a duplicate (also once older than the dedup
    /// window), every top-up booked once, and each card's ledger a gapless chain from its
    /// opening balance to its last balance.
    pub fn assert_settled_exactly_once(&self, tally: &gantry_gen::Tally) {
        self.assert_settled_exactly_once_besides(tally, 0)
    }

    /// [`Env::assert_settled_exactly_once`] when the test added `extra_rejects` records of
    /// its own that must be rejected (beyond what the generator's tally expects).
    pub fn assert_settled_exactly_once_besides(
        &self,
        tally: &gantry_gen::Tally,
        extra_rejects: u64,
    ) {
        let totals: Vec<(u64, u64)> =
            self.query("SELECT count(), uniqExact(trade_id) FROM settlements");
        assert_eq!(totals[0].0, tally.valid, "every valid record settled once");
        assert_eq!(totals[0].1, tally.valid, "no trade settled twice");
        let dups: Vec<u64> = self.query("SELECT count() FROM duplicates WHERE kind = 'trade'");
        assert_eq!(dups[0], tally.duplicates, "every re-sent record is a duplicate");
        let rejects: Vec<(u64, u64, u64)> = self.query(
            "SELECT countIf(reason = 'unknown_card'), countIf(reason = 'outside_dedup_window'), count() FROM rejects",
        );
        assert_eq!(
            rejects[0],
            (tally.unknown_card, 0, tally.unknown_card + tally.bad + extra_rejects),
            "rejects (none too old: a late record is looked up in what is settled)"
        );
        let topups: Vec<(u64, i64)> =
            self.query("SELECT count(), sum(amount) FROM ledger WHERE kind = 'topup'");
        assert_eq!(topups[0], (tally.topups, tally.topup_amount), "top-ups");
        let opens: Vec<u64> = self.query("SELECT count() FROM ledger WHERE kind = 'open'");
        assert_eq!(opens[0], tally.opens, "card openings");
        // Each card's ledger, in the order the engine applied it (batch, then place in the
        // batch), is a chain: every balance is the one before plus the movement, from the
        // opening balance on — no gap, no repeat, nothing out of order.
        let broken: Vec<u64> = self.query(
            "SELECT count() FROM (SELECT arraySort(t -> (t.1, t.2), groupArray((batch_seq, batch_row, amount, balance_after))) AS chain FROM ledger GROUP BY card_id) WHERE arrayCumSum(arrayMap(t -> t.3, chain)) != arrayMap(t -> t.4, chain)",
        );
        assert_eq!(broken[0], 0, "cards whose ledger does not add up to their balance");
        let ledger: Vec<(u64, u64)> =
            self.query("SELECT count(), uniqExact(card_id, kind, entry_id) FROM ledger");
        assert_eq!(ledger[0].0, ledger[0].1, "no ledger entry written twice");
        // The rollups saw each row of their source tables exactly once too.
        let splits: Vec<(u64, i64)> = self.query("SELECT count(), sum(fee) FROM settlement_splits");
        let clearing: Vec<(u64, i64)> = self.query("SELECT sum(n), sum(fee) FROM clearing_daily");
        assert_eq!(clearing[0], splits[0], "clearing_daily against settlement_splits");
        let trades: Vec<(u64, u64)> = self.query(
            "SELECT (SELECT sum(trades) FROM clearing_daily), (SELECT count() FROM (SELECT DISTINCT trade_date, owner_id, trade_id FROM settlement_splits))",
        );
        assert_eq!(trades[0].0, trades[0].1, "clearing_daily's transactions per owner and day");
        // card_activity: each card's entries, last balance and customer as its ledger has them.
        let cards: Vec<(u64, u64)> = self.query(
            "SELECT count(), countIf(a_entries = l_entries AND a_balance = l_balance AND a_customer = l_customer) FROM (SELECT card_id, toUInt64(sum(entries)) AS a_entries, argMaxIf(balance_after, (batch_seq, last_row), entries > 0) AS a_balance, anyIf(customer_id, customer_id != '') AS a_customer FROM card_activity GROUP BY card_id) ANY INNER JOIN (SELECT card_id, toUInt64(count()) AS l_entries, argMax(balance_after, (batch_seq, batch_row)) AS l_balance, any(customer_id) AS l_customer FROM ledger GROUP BY card_id) USING card_id",
        );
        assert_eq!(cards[0], (tally.opens, tally.opens), "card_activity against the ledger");
        let trips: Vec<(u64, i64)> =
            self.query("SELECT count(), sum(fee) FROM settlements WHERE card_id != ''");
        let usage: Vec<(u64, i64, u64, i64)> = self.query(
            "SELECT sum(trips), sum(fee), sum(topups), sum(topup_amount) FROM customer_usage_daily",
        );
        assert_eq!(
            usage[0],
            (trips[0].0, trips[0].1, tally.topups, tally.topup_amount),
            "customer_usage_daily against settlements and top-ups"
        );
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
