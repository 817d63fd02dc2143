//! `gantry serve`'s configuration (contract §5.1): one TOML file, unknown keys refused,
//! validated as a whole before the server starts (every error named at once).

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::auth::Role;

/// Everything `gantry serve` needs. Limits carry their unit in the name.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address the API listens on.
    pub listen: String,
    pub clickhouse_url: String,
    pub database: String,
    /// Kafka bootstrap servers: `POST /v1/adjustments` publishes account events there.
    pub brokers: String,
    /// The account-events topic adjustments are published to (contract §1, same as `gantry run`'s).
    pub account_topic: String,
    /// The network's time zone, as minutes east of UTC: what a `date` or `month` parameter
    /// means, and how times are printed (+08:00, as `gantry run` assumes by default).
    pub network_utc_offset_min: i32,
    /// A query ClickHouse has not answered in this long is cancelled and answered 503: a
    /// runaway scan must not hold a server thread. 30 s: the slowest endpoint (segments over
    /// 10M settlements) takes a few seconds here.
    pub query_timeout_ms: u64,
    /// Least time between two INSERTs of audit rows (group commit; an answer with personal
    /// data waits for its row). 10 ms: a client asking one question after another waits up to
    /// this long for the INSERT after its previous one, so it is a floor on every CRM answer
    /// (at 50 ms, a single client's every card lookup took 52 ms); ClickHouse gets at most
    /// 100 small parts a second in `api_audit`, which its merges keep up with (checked after
    /// the API benchmark: `bench/PERFORMANCE.md`).
    pub audit_insert_interval_ms: u64,
    /// Largest number of customers one segments or churn-risk answer lists (the counts are
    /// always complete). 100,000: a spreadsheet's worth; narrow with `tier=` or `limit=`.
    pub list_rows_max: usize,
    /// Segments and churn risk are computed from the whole usage rollup, kept in memory per
    /// as-of date and computed again when older than this (every answer says when it was
    /// computed). 5 minutes: both are weekly questions, and one scan of the rollup every
    /// few minutes costs little, where one per request held both cores for seconds.
    pub population_refresh_ms: u64,
    pub api_keys: Vec<ApiKeyConfig>,
    /// The PII key file `gantry run` seals plates with (`gantry_pii`): needed to show a
    /// plate, in clear or masked. Without it plates are shown as empty.
    pub pii_keys_file: Option<std::path::PathBuf>,
    pub segments: SegmentConfig,
    pub churn: ChurnConfig,
}

/// One API key: its id (logged and audited), the SHA-256 of the key (the key itself is
/// never stored) and its roles.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    pub sha256: String,
    pub roles: Vec<Role>,
}

/// Value tiers by recency, frequency and spend (RFM) over the last `window_days` before
/// the as-of date. Each measure scores 3, 2 or 1 against its two thresholds (first: for 3);
/// the tier follows the sum: ≥ 8 `high`, ≥ 6 `medium`, else `low`; no trip in the window is
/// `dormant`. The defaults suit toll traffic: a commuter crosses gantries twice a working
/// day (~40 trips per 30 days of 90, spend ≥ 500 yuan a quarter), a weekend driver a few
/// times a month.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    pub window_days: u32,
    /// Days since the last trip for a recency score of 3, then of 2.
    pub recency_days: [u32; 2],
    /// Trips in the window for a frequency score of 3, then of 2.
    pub trips: [u64; 2],
    /// Fees in the window (fen) for a spend score of 3, then of 2.
    pub spend_fen: [i64; 2],
}

impl Default for SegmentConfig {
    fn default() -> SegmentConfig {
        SegmentConfig {
            window_days: 90,
            recency_days: [7, 30],
            trips: [40, 10],
            spend_fen: [50_000, 10_000],
        }
    }
}

/// Churn risk: a customer's trips in the last `recent_days` against their own baseline, the
/// trips per `recent_days` over the `baseline_days` before that. At risk when the baseline
/// is at least `baseline_trips_min` (a regular user: fewer is noise) and the recent trips
/// fell to `drop_ratio_max` of it or less; a stored-value customer not topped up for
/// `topup_silence_days` is flagged too (a card left to run dry).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnConfig {
    pub recent_days: u32,
    pub baseline_days: u32,
    pub baseline_trips_min: f64,
    pub drop_ratio_max: f64,
    pub topup_silence_days: u32,
}

impl Default for ChurnConfig {
    fn default() -> ChurnConfig {
        ChurnConfig {
            recent_days: 30,
            baseline_days: 90,
            baseline_trips_min: 4.0,
            drop_ratio_max: 0.5,
            topup_silence_days: 60,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            clickhouse_url: "http://127.0.0.1:8123".into(),
            database: "gantry".into(),
            brokers: "127.0.0.1:9092".into(),
            account_topic: "gantry.account-events".into(),
            network_utc_offset_min: gantry_core::time::DEFAULT_NETWORK_UTC_OFFSET_MIN,
            query_timeout_ms: 30_000,
            audit_insert_interval_ms: 10,
            list_rows_max: 100_000,
            population_refresh_ms: 300_000,
            api_keys: Vec::new(),
            pii_keys_file: None,
            segments: SegmentConfig::default(),
            churn: ChurnConfig::default(),
        }
    }
}

/// Everything wrong with a configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigErrors(pub Vec<String>);

impl ServeConfig {
    pub fn from_toml(text: &str) -> Result<ServeConfig, ConfigErrors> {
        let cfg: ServeConfig =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!("listen: `{}` is not an address:port", self.listen));
        }
        if self.database.is_empty()
            || !self.database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            errors.push(format!("database: `{}` is not a plain identifier", self.database));
        }
        if self.network_utc_offset_min.abs() > 14 * 60 {
            errors.push("network_utc_offset_min: beyond ±14 h".into());
        }
        if self.query_timeout_ms == 0
            || self.audit_insert_interval_ms == 0
            || self.list_rows_max == 0
            || self.population_refresh_ms == 0
        {
            errors.push(
                "query_timeout_ms, audit_insert_interval_ms, list_rows_max and population_refresh_ms must be > 0".into(),
            );
        }
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        for k in &self.api_keys {
            if k.id.is_empty() || !ids.insert(k.id.as_str()) {
                errors.push(format!("api_keys: id `{}` is empty or given twice", k.id));
            }
            let hex_ok = k.sha256.len() == 64 && k.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok {
                errors.push(format!("api_keys `{}`: sha256 is not 64 hex digits", k.id));
            } else if !hashes.insert(k.sha256.to_ascii_lowercase()) {
                errors.push(format!("api_keys `{}`: the same key hash as another key", k.id));
            }
            if k.roles.is_empty() {
                errors.push(format!("api_keys `{}`: no roles", k.id));
            }
        }
        let s = &self.segments;
        if s.window_days == 0
            || s.recency_days[0] > s.recency_days[1]
            || s.trips[0] < s.trips[1]
            || s.spend_fen[0] < s.spend_fen[1]
        {
            errors.push("segments: window_days > 0, and each pair of thresholds ordered from the score of 3 to that of 2".into());
        }
        let c = &self.churn;
        if c.recent_days == 0
            || c.baseline_days < c.recent_days
            || !(0.0..1.0).contains(&c.drop_ratio_max)
        {
            errors.push(
                "churn: recent_days > 0, baseline_days ≥ recent_days, 0 ≤ drop_ratio_max < 1"
                    .into(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_parses_and_every_error_is_named() {
        let good = "listen = \"127.0.0.1:8080\"\nclickhouse_url = \"http://127.0.0.1:8123\"\ndatabase = \"gantry\"\n\n[[api_keys]]\nid = \"fin-01\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nroles = [\"finance\"]\n";
        let cfg = ServeConfig::from_toml(good).unwrap();
        assert_eq!(cfg.api_keys[0].roles, vec![Role::Finance]);
        let bad = "listen = \"nowhere\"\n[[api_keys]]\nid = \"a\"\nsha256 = \"xyz\"\nroles = []\n";
        let e = ServeConfig::from_toml(bad).unwrap_err().0;
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(ServeConfig::from_toml("lisen = \"x\"").is_err(), "unknown keys are refused");
        assert!(ServeConfig::from_toml("[[api_keys]]\nid=\"a\"\nsha256=\"00\"\nroles=[\"admin\"]")
            .is_err());
    }
}
