//! `gantry serve`, `gantry report settlement` and `gantry adjust` end to end: known records
//! settled by the real pipeline (real broker, real ClickHouse), then every endpoint asked
//! over HTTP as finance, CRM and CRM-with-PII keys, with the figures worked out by hand.

#![forbid(unsafe_code)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gantry_core::time::parse_timestamp_ms;
use gantry_tests::{fixture_tariffs, Env};
use serde_json::Value;

use common::Running;

const CARD: &str = "32011820220000123456";
const CARD2: &str = "32020000000000000777";
const UNKNOWN: &str = "32019999999999999999";
const PLATE: &str = "苏A12345_0";
const KEY_FIN: &str = "fin-key-0123456789";
const KEY_CRM: &str = "crm-key-0123456789";
const KEY_PII: &str = "pii-key-0123456789";
const KEY_OPS: &str = "ops-key-0123456789";

fn ts(t: &str) -> i64 {
    parse_timestamp_ms(t, 480).unwrap() + 1_000
}

fn lane(id: &str, card: &str, units: &str, time: &str, plate: &str) -> String {
    format!(
        r#"{{"tradeId":"{id}","gantryId":"G1","tollIntervalId":"{units}","transTime":"{time}","mediaType":1,"cpuCardId":"{card}","vehicleType":1,"vehiclePlate":"{plate}"}}"#
    )
}

fn sha(key: &str) -> String {
    gantry_api::auth::key_hash(key)
}

/// Free loopback port (bound and released: the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    _child: Running,
    base: String,
    http: reqwest::blocking::Client,
    config: PathBuf,
    /// Requests that reached a guarded route (so must be in the audit trail).
    routed: std::cell::Cell<u64>,
}

impl Server {
    fn start(env: &Env, dir: &Path) -> Server {
        let port = free_port();
        let c = &env.cfg;
        let keys = [
            ("fin-01", KEY_FIN, "\"finance\""),
            ("crm-01", KEY_CRM, "\"crm\""),
            ("pii-01", KEY_PII, "\"crm\", \"pii\""),
            ("ops-01", KEY_OPS, "\"ops\""),
        ]
        .iter()
        .map(|(id, k, roles)| {
            format!("[[api_keys]]\nid = \"{id}\"\nsha256 = \"{}\"\nroles = [{roles}]\n", sha(k))
        })
        .collect::<String>();
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\nclickhouse_url = \"{}\"\ndatabase = \"{}\"\nbrokers = \"{}\"\naccount_topic = \"{}\"\npii_keys_file = \"{}\"\n{keys}",
            c.clickhouse_url,
            c.database,
            c.brokers,
            c.account_topic,
            dir.join("pii.toml").display()
        );
        let config = dir.join("serve.toml");
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Running)
            .unwrap();
        let s = Server {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::new(),
            config,
            routed: 0.into(),
        };
        for _ in 0..300 {
            if s.http
                .get(format!("{}/health/ready", s.base))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "gantry serve not ready; log: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
    }

    /// (status, body as text, content type).
    fn get(&self, path: &str, key: Option<&str>, accept: &str) -> (u16, String, String) {
        let mut r = self.http.get(format!("{}{path}", self.base)).header("Accept", accept);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let r = r.send().unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let (status, body) = (r.status().as_u16(), r.text().unwrap());
        self.count(path, status, &body);
        (status, body, ct)
    }

    fn json(&self, path: &str, key: &str) -> Value {
        let (status, body, _) = self.get(path, Some(key), "application/json");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn post(&self, path: &str, key: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let (status, text) = (r.status().as_u16(), r.text().unwrap());
        self.count(path, status, &text);
        (status, serde_json::from_str(&text).unwrap())
    }

    fn count(&self, path: &str, status: u16, body: &str) {
        let fallback = status == 404 && body.contains("\"not_found\"");
        // A 405 (wrong method on a route) passes the guard too: refused calls are recorded.
        if path.starts_with("/v1/") && !path.starts_with("/v1/openapi.json") && !fallback {
            self.routed.set(self.routed.get() + 1);
        }
    }
}

fn produce_known(env: &Env) {
    let open = |card: &str, customer: &str, ty: u8, balance: i64, credit: i64| {
        format!(
            r#"{{"type":"open","cardId":"{card}","time":"2026-11-01T08:00:00","customerId":"{customer}","cardType":{ty},"vehicleType":1,"balance":{balance},"creditLimit":{credit}}}"#
        )
    };
    env.produce_account(CARD, &open(CARD, "CU1", 22, 1000, 0), ts("2026-11-01T08:00:00"));
    env.produce_account(CARD2, &open(CARD2, "CU2", 23, 0, 500), ts("2026-11-01T08:00:00"));
    env.flush();
    let u12 = "G0015320030010|G0015320030020";
    let one = "G0015320030010";
    env.produce_lane(
        CARD,
        &lane("T1", CARD, u12, "2026-11-10T12:00:00", ""),
        ts("2026-11-10T12:00:00"),
    ); // 974 → 26
    env.produce_lane(
        CARD,
        &lane("T1", CARD, u12, "2026-11-10T12:00:00", ""),
        ts("2026-11-10T12:00:30"),
    ); // duplicate
    env.produce_lane(
        CARD,
        &lane("T2", CARD, one, "2026-11-10T12:05:00", ""),
        ts("2026-11-10T12:05:00"),
    ); // 589 → −563
    env.produce_lane(
        CARD2,
        &lane("T3", CARD2, one, "2026-11-10T12:06:00", ""),
        ts("2026-11-10T12:06:00"),
    ); // 589
    env.produce_lane(
        "3201999",
        &lane("T4", UNKNOWN, one, "2026-11-10T12:07:00", ""),
        ts("2026-11-10T12:07:00"),
    ); // arrears 589
    env.produce_lane(
        CARD,
        &lane("T5", CARD, "G9", "2026-11-10T12:08:00", PLATE),
        ts("2026-11-10T12:08:00"),
    ); // unknown unit
    env.produce(
        &env.cfg.lane_topic.clone(),
        CARD,
        b"{\"tradeId\":\"T6\"",
        ts("2026-11-10T12:09:00"),
    ); // malformed
    env.produce_lane("cpc", r#"{"tradeId":"C1","gantryId":"G1","tollIntervalId":"G0015320030010","transTime":"2026-11-10T12:10:00","mediaType":2,"obuId":"CPC1","vehicleType":2}"#, ts("2026-11-10T12:10:00")); // 930
    env.flush();
    let topup = format!(
        r#"{{"type":"topup","cardId":"{CARD}","time":"2026-11-10T13:00:00","topupId":"TU1","amount":10000}}"#
    );
    env.produce_account(CARD, &topup, ts("2026-11-10T13:00:00"));
    let lost = format!(
        r#"{{"type":"status","cardId":"{CARD}","time":"2026-11-10T14:00:00","status":"lost"}}"#
    );
    env.produce_account(CARD, &lost, ts("2026-11-10T14:00:00"));
    env.produce_lane(
        CARD,
        &lane("T7", CARD, one, "2026-11-10T14:30:00", PLATE),
        ts("2026-11-10T14:30:00"),
    ); // 589 → 8848
}

/// The current month, `YYYY-MM`, in +08:00: the month the test's batches are booked in.
fn booking_month() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    gantry_core::time::format_timestamp(now, 480)[..7].to_string()
}

#[test]
fn every_endpoint_answers_the_known_figures() {
    let env = Env::new("api_known", 2);
    let dir = std::env::temp_dir().join(format!("gantry-test-{}", env.cfg.database));
    std::fs::create_dir_all(&dir).unwrap();
    produce_known(&env);
    // Plates sealed with a key file `gantry serve` reads too.
    std::fs::write(dir.join("pii.toml"), gantry_pii::TEST_KEYS).unwrap();
    let keys = gantry_pii::Keyring::from_toml(gantry_pii::TEST_KEYS).unwrap();
    let mut cfg = env.cfg.clone();
    cfg.plate_keys = Some(std::sync::Arc::new(keys));
    env.run(&cfg, &fixture_tariffs());
    plates_at_rest(&env, cfg.plate_keys.as_deref().unwrap());
    let s = Server::start(&env, &dir);

    access_control(&s);
    finance(&s, &env, &dir);
    crm(&s);
    adjustments(&s, &env);
    openapi_matches_the_routes(&s);
    every_route_for_every_key(&s);
    no_plate_in_any_column(&env);
    audit_trail(&env, s.routed.get());
    erasure(&s, &env);
}

/// No plate in clear in any table: sealed in `settlements`, with the keyed hash to find it
/// by, and sealed in the raw bytes of `rejects`.
fn plates_at_rest(env: &Env, keys: &gantry_pii::Keyring) {
    let clear: Vec<u64> = env.query("SELECT count() FROM settlements WHERE position(vehicle_plate, '12345') > 0 OR position(plate_enc, '12345') > 0");
    assert_eq!(clear[0], 0);
    let rows: Vec<(String, String, String)> =
        env.query("SELECT trade_id, plate_enc, plate_hash FROM settlements WHERE plate_enc != ''");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), keys.open(&rows[0].1).unwrap()), ("T7", PLATE.to_string()));
    assert_eq!(rows[0].2, keys.lookup_hash(PLATE));
    let raw: Vec<String> = env.query("SELECT raw FROM rejects WHERE reason = 'unknown_interval'");
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert!(
        !raw[0].contains(PLATE)
            && !raw[0].contains("苏")
            && raw[0].contains("\"vehiclePlate\":\"k2:"),
        "{}",
        raw[0]
    );
}

/// `gantry pii erase`: the customer's plates and raw records go, every amount stays.
fn erasure(s: &Server, env: &Env) {
    let month = format!("/v1/customers/CU1/statement?month={}", booking_month());
    let before = s.json(&month, KEY_PII)["totals"].clone();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["pii", "erase", "--customer", "CU1", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let card = s.json(&format!("/v1/cards/{CARD}"), KEY_PII);
    let shown = (card["last_passage"]["plate"].as_str(), card["balance"].as_i64());
    assert_eq!(shown, (Some(""), Some(8848 + 974)), "{card}");
    assert_eq!(s.json(&month, KEY_PII)["totals"], before, "no amount changes");
    let left: Vec<u64> = env.query("SELECT count() FROM settlements WHERE customer_id = 'CU1' AND (plate_enc != '' OR plate_hash != '' OR obu_id != '')");
    assert_eq!(left[0], 0);
    let raw: Vec<u64> =
        env.query(&format!("SELECT count() FROM rejects WHERE position(raw, '{CARD}') > 0"));
    assert_eq!(raw[0], 0);
    let other: Vec<u64> = env.query("SELECT count() FROM settlements WHERE customer_id = 'CU2'");
    assert_eq!(other[0], 1, "another customer's rows are untouched");
}

fn access_control(s: &Server) {
    let path = "/v1/settlements/daily?date=2026-11-10";
    for (key, status, code) in [
        (None, 401, "unauthorized"),
        (Some("wrong-key"), 401, "unauthorized"),
        (Some(KEY_CRM), 403, "forbidden"),
        (Some(KEY_OPS), 403, "forbidden"),
    ] {
        let (got, body, ct) = s.get(path, key, "application/json");
        assert_eq!(got, status, "{key:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], code);
        assert!(ct.starts_with("application/json"));
        assert!(
            !body.contains("wrong-key") && !body.contains(KEY_CRM),
            "no key in an error: {body}"
        );
    }
    assert_eq!(s.get("/v1/cards/".to_string().as_str(), Some(KEY_FIN), "*/*").0, 404);
    for bad in [
        "/v1/settlements/daily?date=2026-02-30",
        "/v1/settlements/daily?date=x",
        "/v1/settlements/daily",
        "/v1/clearing?date=11-10-2026",
    ] {
        let (status, body, _) = s.get(bad, Some(KEY_FIN), "application/json");
        assert_eq!(status, 400, "{bad}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"] == "bad_date" || v["error"] == "bad_parameter", "{body}");
    }
    let (status, body, _) =
        s.get("/v1/customers/CU1/statement?month=2026-13", Some(KEY_CRM), "*/*");
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["error"].clone()),
        (400, "bad_month".into())
    );
    assert_eq!(s.get("/v1/nothing", Some(KEY_FIN), "*/*").0, 404);
    assert_eq!(s.get("/health", None, "*/*").0, 200);
    let (status, metrics, _) = s.get("/metrics", None, "*/*");
    assert_eq!(status, 200);
    assert!(metrics.contains("gantry_api_requests_total"), "{metrics}");
}

fn finance(s: &Server, env: &Env, dir: &Path) {
    let day = s.json("/v1/settlements/daily?date=2026-11-10", KEY_FIN);
    // T1 974, T2 589, T3 589, T7 589 (ETC) and C1 930 (CPC).
    assert_eq!(day["total"]["fee"], 974 + 589 * 3 + 930, "{day}");
    assert_eq!(day["total"]["transactions"], 5);
    let owners = day["owners"].as_array().unwrap();
    let per_owner: i64 = owners.iter().map(|o| o["fee"].as_i64().unwrap()).sum();
    assert_eq!(per_owner, 974 + 589 * 3 + 930);
    let splits: Vec<(String, i64)> = env.query(
        "SELECT owner_id, sum(fee) FROM settlement_splits GROUP BY owner_id ORDER BY owner_id",
    );
    let api: Vec<(String, i64)> = owners
        .iter()
        .map(|o| (o["owner_id"].as_str().unwrap().to_string(), o["fee"].as_i64().unwrap()))
        .collect();
    assert_eq!(api, splits);
    // The same as CSV, and as the T+1 file.
    let (status, csv, ct) =
        s.get("/v1/settlements/daily?date=2026-11-10", Some(KEY_FIN), "text/csv");
    assert_eq!((status, ct.as_str()), (200, "text/csv; charset=utf-8"));
    let csv = csv.trim_start_matches('\u{feff}');
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("owner_id,transactions,unit_passages,pay_fee,discount_fee,fee"));
    let csv_fee: i64 = lines.map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(csv_fee, 974 + 589 * 3 + 930);
    let out = dir.join("settlement-2026-11-10.csv");
    let status = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["report", "settlement", "--date", "2026-11-10", "--config"])
        .arg(&s.config)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let file = std::fs::read_to_string(&out).unwrap();
    let total = file.lines().last().unwrap().to_string();
    let t = &day["total"];
    assert_eq!(
        total,
        format!(
            "TOTAL,{},{},{},{},{}",
            t["transactions"], t["unit_passages"], t["pay_fee"], t["discount_fee"], t["fee"]
        )
    );
    assert_eq!(file.lines().count(), owners.len() + 2, "header, owners, total");

    let clearing = s.json("/v1/clearing?date=2026-11-10", KEY_FIN);
    let matrix_fee: i64 =
        clearing["matrix"].as_array().unwrap().iter().map(|c| c["fee"].as_i64().unwrap()).sum();
    let cpc_fee: i64 =
        clearing["cpc"].as_array().unwrap().iter().map(|c| c["fee"].as_i64().unwrap()).sum();
    assert_eq!((matrix_fee, cpc_fee), (974 + 589 * 3, 930), "{clearing}");
    let issuers: Vec<(&str, i64)> = clearing["issuers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["fee"].as_i64().unwrap()))
        .collect();
    assert_eq!(issuers, [("3201", 974 + 589 * 2), ("3202", 589)]);
    assert_eq!(
        s.json("/v1/clearing?date=2026-11-11", KEY_FIN)["matrix"].as_array().unwrap().len(),
        0
    );

    let today = gantry_core::time::format_timestamp(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64,
        480,
    )[..10]
        .to_string();
    let rec = s.json(&format!("/v1/reconciliation?date={today}"), KEY_FIN);
    assert_eq!(rec["alarm"], false, "{rec}");
    let sum = |f: &str| {
        rec["partitions"].as_array().unwrap().iter().map(|p| p[f].as_u64().unwrap()).sum::<u64>()
    };
    // Lane: T1 T1 T2 T3 T4 T5 T6 C1 T7; account: 2 opens, a top-up, a status.
    assert_eq!(
        (sum("lane_records"), sum("settled"), sum("rejected"), sum("duplicates")),
        (9, 5, 3, 1),
        "{rec}"
    );
    assert_eq!(
        (sum("account_events"), sum("events_applied"), sum("settlement_rows"), sum("reject_rows")),
        (4, 4, 5, 3)
    );
    assert_eq!(sum("messages"), 13);

    let arrears = s.json("/v1/arrears?date=2026-11-10", KEY_FIN);
    assert_eq!(arrears["total_fee"], 589, "{arrears}");
    assert_eq!(arrears["cards"][0]["card_id"], UNKNOWN);
    assert_eq!(
        (arrears["trades"][0]["trade_id"].as_str(), arrears["trades"][0]["card_known"].as_bool()),
        (Some("T4"), Some(false))
    );
}

fn crm(s: &Server) {
    // 1000 − 974 − 589 + 10000 − 589.
    let card = s.json(&format!("/v1/cards/{CARD}"), KEY_CRM);
    assert_eq!(
        (card["balance"].as_i64(), card["status"].as_str(), card["listed"].as_bool()),
        (Some(8848), Some("lost"), Some(true)),
        "{card}"
    );
    assert_eq!(card["customer_id"], "CU1");
    assert_eq!(card["last_passage"]["trade_id"], "T7");
    assert_eq!(card["last_passage"]["time"], "2026-11-10T14:30:00+08:00");
    assert_eq!(card["last_passage"]["plate"], "苏A1***5_0", "masked without pii");
    assert_eq!(s.json(&format!("/v1/cards/{CARD}"), KEY_PII)["last_passage"]["plate"], PLATE);
    assert_eq!(s.get(&format!("/v1/cards/{CARD}"), Some(KEY_FIN), "*/*").0, 403);
    assert_eq!(s.get("/v1/cards/12345", Some(KEY_CRM), "*/*").0, 404);
    assert_eq!(s.get("/v1/cards/12ab", Some(KEY_CRM), "*/*").0, 400);
    let postpaid = s.json(&format!("/v1/cards/{CARD2}"), KEY_CRM);
    assert_eq!(
        (postpaid["balance"].as_i64(), postpaid["listing_reason"].as_str()),
        (Some(-589), Some("overdrawn"))
    );

    // Whose car is this: found by the plate's keyed hash, for crm + pii keys only.
    let found = s.json(&format!("/v1/plates/{PLATE}"), KEY_PII);
    assert_eq!(
        (found["cards"][0]["card_id"].as_str(), found["cards"][0]["customer_id"].as_str()),
        (Some(CARD), Some("CU1")),
        "{found}"
    );
    assert_eq!(
        (found["cards"].as_array().unwrap().len(), found["cards"][0]["trips"].as_u64()),
        (1, Some(1))
    );
    assert_eq!(s.get(&format!("/v1/plates/{PLATE}"), Some(KEY_CRM), "*/*").0, 403);
    assert_eq!(s.json("/v1/plates/苏Z99999_0", KEY_PII)["cards"].as_array().unwrap().len(), 0);
    let usage = s.json("/v1/customers/CU1/usage?from=2026-11-09&to=2026-11-11", KEY_CRM);
    let days = usage["days"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    assert_eq!(
        (days[0]["trips"].as_u64(), days[0]["balance"].as_i64()),
        (Some(0), Some(1000)),
        "{usage}"
    );
    assert_eq!(
        (days[1]["trips"].as_u64(), days[1]["fee"].as_i64(), days[1]["topup_amount"].as_i64()),
        (Some(3), Some(974 + 589 * 2), Some(10000))
    );
    assert_eq!(
        (days[1]["balance"].as_i64(), days[2]["balance"].as_i64()),
        (Some(8848), Some(8848))
    );
    assert_eq!(usage["total"]["balance"], 8848);
    let (status, csv, _) =
        s.get("/v1/customers/CU1/usage?from=2026-11-09&to=2026-11-11", Some(KEY_CRM), "text/csv");
    assert_eq!(status, 200);
    assert_eq!(csv.trim_start_matches('\u{feff}').lines().count(), 4, "{csv}");
    assert_eq!(
        s.get("/v1/customers/CU1/usage?from=2026-11-12&to=2026-11-11", Some(KEY_CRM), "*/*").0,
        400
    );
    assert_eq!(s.get("/v1/customers/NOBODY/usage", Some(KEY_CRM), "*/*").0, 404);

    let st = s.json(&format!("/v1/customers/CU1/statement?month={}", booking_month()), KEY_CRM);
    let t = &st["totals"];
    assert_eq!(
        (t["opening_balance"].as_i64(), t["opened_amount"].as_i64(), t["closing_balance"].as_i64()),
        (Some(0), Some(1000), Some(8848)),
        "{st}"
    );
    assert_eq!(
        (t["trips"].as_u64(), t["fee"].as_i64(), t["topup_amount"].as_i64(), t["net"].as_i64()),
        (Some(3), Some(974 + 589 * 2), Some(10000), Some(8848))
    );
    let lines = st["cards"][0]["lines"].as_array().unwrap();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["open", "debit", "debit", "topup", "debit"]);
    assert_eq!(
        (
            lines[1]["units"].as_u64(),
            lines[1]["discount_fee"].as_i64(),
            lines[1]["balance_after"].as_i64()
        ),
        (Some(2), Some(51), Some(26))
    );
    assert_eq!(lines[4]["plate"], "苏A1***5_0");
    assert_eq!(
        s.json(&format!("/v1/customers/CU1/statement?month={}", booking_month()), KEY_PII)["cards"]
            [0]["lines"][4]["plate"],
        PLATE
    );
    assert_eq!(
        s.json("/v1/customers/CU1/statement?month=2020-01", KEY_CRM)["cards"][0]["lines"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let seg = s.json("/v1/customers/segments?as_of=2026-11-30", KEY_CRM);
    let tier_of = |c: &str| {
        seg["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["list"].as_array().unwrap().iter().any(|x| x["customer_id"] == c))
            .map(|t| t["tier"].as_str().unwrap().to_string())
    };
    // CU1: 3 trips, 2152 fen, 20 days ago: scores 2+1+1 → low. Nothing in 90 days → dormant.
    assert_eq!(
        (tier_of("CU1").as_deref(), tier_of("CU2").as_deref()),
        (Some("low"), Some("low")),
        "{seg}"
    );
    assert_eq!(
        s.json("/v1/customers/segments?as_of=2027-06-30", KEY_CRM)["tiers"][3]["customers"],
        2
    );
    assert_eq!(s.get("/v1/customers/segments?tier=gold", Some(KEY_CRM), "*/*").0, 400);
    let churn = s.json("/v1/customers/churn-risk?as_of=2026-11-30", KEY_CRM);
    assert_eq!(churn["customers"], 0, "3 trips are too few for a baseline: {churn}");
}

fn adjustments(s: &Server, env: &Env) {
    let body = |id: &str, amount: i64, trade: &str| {
        format!(
            r#"{{"adjustId":"{id}","cardId":"{CARD}","amount":{amount},"reason":"double_read","tradeId":"{trade}"}}"#
        )
    };
    let (status, v) = s.post("/v1/adjustments", KEY_CRM, &body("A1", 500, "T1"));
    assert_eq!(
        (status, v["status"].as_str(), v["refundableAfter"].as_i64()),
        (202, Some("published"), Some(474)),
        "{v}"
    );
    let (status, v) = s.post("/v1/adjustments", KEY_CRM, &body("A1", 500, "T1"));
    assert_eq!(
        (status, v["status"].as_str()),
        (202, Some("already_accepted")),
        "the same request twice refunds once"
    );
    assert_eq!(
        s.post("/v1/adjustments", KEY_CRM, &body("A1", 400, "T1")).1["error"],
        "adjust_id_conflict"
    );
    let (status, v) = s.post("/v1/adjustments", KEY_CRM, &body("A2", 475, "T1"));
    assert_eq!((status, v["error"].as_str()), (422, Some("exceeds_fee")), "{v}");
    assert_eq!(
        s.post("/v1/adjustments", KEY_CRM, &body("A3", 10, "T3")).1["error"],
        "unknown_trade",
        "T3 is another card's"
    );
    assert_eq!(
        s.post("/v1/adjustments", KEY_CRM, &body("A3", 10, "NOPE")).1["error"],
        "unknown_trade"
    );
    assert_eq!(s.post("/v1/adjustments", KEY_CRM, &body("A3", -10, "T1")).0, 400);
    assert_eq!(s.post("/v1/adjustments", KEY_CRM, "{\"adjustId\":1}").1["error"], "bad_body");
    assert_eq!(s.post("/v1/adjustments", KEY_FIN, &body("A3", 10, "T1")).0, 403);
    // The rest of T1's fee through the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "adjust",
            "--adjust-id",
            "A4",
            "--card",
            CARD,
            "--amount",
            "474",
            "--reason",
            "double_read",
            "--trade",
            "T1",
            "--config",
        ])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.post("/v1/adjustments", KEY_CRM, &body("A5", 1, "T1")).1["error"], "exceeds_fee");
    // The engine applies both, once each: the adjustment events flow through the ledger.
    env.run(&env.cfg, &fixture_tariffs());
    let card = s.json(&format!("/v1/cards/{CARD}"), KEY_CRM);
    assert_eq!(card["balance"], 8848 + 974, "{card}");
    let adjusts: Vec<(String, i64)> =
        env.query("SELECT entry_id, amount FROM ledger WHERE kind = 'adjust' ORDER BY entry_id");
    assert_eq!(adjusts, [("A1".to_string(), 500), ("A4".to_string(), 474)]);
    let st = s.json(&format!("/v1/customers/CU1/statement?month={}", booking_month()), KEY_CRM);
    assert_eq!(
        (
            st["totals"]["adjustments"].as_u64(),
            st["totals"]["adjustment_amount"].as_i64(),
            st["totals"]["closing_balance"].as_i64()
        ),
        (Some(2), Some(974), Some(8848 + 974))
    );
}

/// Every path of the OpenAPI document is a route the server has (a handler answers, not
/// the fallback), and every route the server has is in the document.
fn openapi_matches_the_routes(s: &Server) {
    let doc = s.json("/v1/openapi.json", KEY_OPS);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let expected = [
        "/v1/adjustments",
        "/v1/arrears",
        "/v1/cards/{cardId}",
        "/v1/clearing",
        "/v1/customers/churn-risk",
        "/v1/customers/segments",
        "/v1/customers/{customerId}/statement",
        "/v1/customers/{customerId}/usage",
        "/v1/plates/{plate}",
        "/v1/reconciliation",
        "/v1/settlements/daily",
    ];
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    for p in &paths {
        let path =
            p.replace("{cardId}", CARD).replace("{customerId}", "CU1").replace("{plate}", "X1");
        let (status, body, _) = s.get(&path, Some(KEY_OPS), "*/*");
        let code =
            serde_json::from_str::<Value>(&body).map(|v| v["error"].clone()).unwrap_or_default();
        // A handler answers (403 for an ops key, 400 for a missing parameter, 405 for the
        // wrong method): the route exists; the fallback would say `not_found`.
        assert!([400, 403, 405].contains(&status), "{p}: {status} {body}");
        assert_ne!(code, "not_found");
    }
}

fn audit_trail(env: &Env, routed: u64) {
    type Row = (String, String, String, u8, u8, u16);
    let sql = "SELECT key_id, endpoint, card_id, personal, pii_shown, status FROM api_audit ORDER BY time, time_ms";
    // Rows of answers without personal data are written after the answer (within
    // `audit_insert_interval_ms`): wait for the writer to catch up.
    let mut rows: Vec<Row> = env.query(sql);
    for _ in 0..100 {
        if rows.len() as u64 >= routed {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        rows = env.query(sql);
    }
    assert!(rows.iter().any(|r| r.0.is_empty() && r.5 == 401), "refused requests are recorded");
    assert!(
        rows.iter().any(|r| r.0 == "pii-01"
            && r.1 == "/v1/cards/{cardId}"
            && r.2 == CARD
            && r.3 == 1
            && r.4 == 1),
        "a plate shown in clear"
    );
    assert!(
        rows.iter().any(|r| r.0 == "crm-01" && r.1 == "/v1/cards/{cardId}" && r.3 == 1 && r.4 == 0),
        "a masked answer"
    );
    assert!(rows
        .iter()
        .any(|r| r.0 == "fin-01" && r.1 == "/v1/settlements/daily" && r.3 == 0 && r.5 == 200));
    let leaked: Vec<u64> = env.query(&format!("SELECT count() FROM api_audit WHERE position(concat(key_id, roles, query), '{KEY_CRM}') > 0"));
    assert_eq!(leaked[0], 0);
    // Every request that reached a `/v1` route is in the trail, once.
    assert_eq!(rows.len() as u64, routed);
}

/// Generated traffic (duplicates, bad and unknown-card records, top-ups, several owners
/// and issuers) through the real pipeline, then the API's figures against the base tables
/// and the generator's own tally: every day's settlement and clearing, the reconciliation,
/// and each sampled customer's statement, usage and card balances.
#[test]
fn generated_traffic_adds_up_through_the_api() {
    let env = Env::new("api_generated", 3);
    let dir = std::env::temp_dir().join(format!("gantry-test-{}", env.cfg.database));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pii.toml"), gantry_pii::TEST_KEYS).unwrap();
    let net = gantry_gen::Network::new(7, 120, 6);
    let tariff_dir = dir.join("tariffs");
    net.write_tariff_dir(&tariff_dir).unwrap();
    let traffic_cfg =
        gantry_gen::TrafficConfig { records: 8_000, cards: 300, seed: 21, ..Default::default() };
    let mut traffic = gantry_gen::Traffic::new(traffic_cfg, &net);
    env.produce_traffic(&mut traffic, 8_000);
    env.run(&env.cfg, &tariff_dir);
    env.assert_settled_exactly_once(&traffic.tally);
    let s = Server::start(&env, &dir);

    let days: Vec<(String, u64, i64)> = env.query("SELECT toString(trade_date), count(), sum(fee) FROM settlements GROUP BY trade_date ORDER BY trade_date");
    assert!(days.len() >= 14, "{days:?}");
    for (day, n, fee) in &days {
        let d = s.json(&format!("/v1/settlements/daily?date={day}"), KEY_FIN);
        assert_eq!(
            (d["total"]["transactions"].as_u64(), d["total"]["fee"].as_i64()),
            (Some(*n), Some(*fee)),
            "{day}"
        );
        let c = s.json(&format!("/v1/clearing?date={day}"), KEY_FIN);
        let sum = |k: &str| {
            c[k].as_array().unwrap().iter().map(|x| x["fee"].as_i64().unwrap()).sum::<i64>()
        };
        assert_eq!(sum("matrix") + sum("cpc"), *fee, "{day}");
        assert_eq!(sum("issuers"), sum("matrix"));
        assert_eq!(sum("owners"), sum("matrix"));
    }

    let today = &booking_month();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let date = gantry_core::time::format_timestamp(now, 480)[..10].to_string();
    let rec = s.json(&format!("/v1/reconciliation?date={date}"), KEY_FIN);
    assert_eq!(rec["alarm"], false, "{rec}");
    let sum = |f: &str| {
        rec["partitions"].as_array().unwrap().iter().map(|p| p[f].as_u64().unwrap()).sum::<u64>()
    };
    let t = &traffic.tally;
    assert_eq!(sum("lane_records"), t.lane_records());
    assert_eq!(
        (sum("settled"), sum("duplicates"), sum("rejected")),
        (t.valid, t.duplicates, t.unknown_card + t.bad)
    );
    assert_eq!(rec["partitions"].as_array().unwrap().len(), 3);

    let customers: Vec<String> = env
        .query("SELECT DISTINCT customer_id FROM ledger WHERE kind = 'open' ORDER BY customer_id");
    let seg = s.json("/v1/customers/segments?as_of=2026-10-12", KEY_CRM);
    let in_tiers: u64 =
        seg["tiers"].as_array().unwrap().iter().map(|t| t["customers"].as_u64().unwrap()).sum();
    assert_eq!(in_tiers, customers.len() as u64, "every customer in one tier");
    for c in customers.iter().step_by(6) {
        let st = s.json(&format!("/v1/customers/{c}/statement?month={today}"), KEY_CRM);
        let ledger: Vec<(i64, u64)> = env.query(&format!(
            "SELECT sum(amount), countIf(kind = 'debit') FROM ledger WHERE customer_id = '{c}'"
        ));
        let last: Vec<i64> = env.query(&format!("SELECT sum(b) FROM (SELECT argMax(balance_after, (batch_seq, batch_row)) AS b FROM ledger WHERE customer_id = '{c}' GROUP BY card_id)"));
        let totals = &st["totals"];
        assert_eq!(
            (totals["net"].as_i64(), totals["trips"].as_u64()),
            (Some(ledger[0].0), Some(ledger[0].1)),
            "{c}: {st}"
        );
        assert_eq!(totals["closing_balance"].as_i64(), Some(last[0]), "{c}");
        for card in st["cards"].as_array().unwrap() {
            let lines = card["lines"].as_array().unwrap();
            let mut balance = card["totals"]["opening_balance"].as_i64().unwrap();
            for l in lines {
                balance += l["amount"].as_i64().unwrap();
                assert_eq!(l["balance_after"].as_i64(), Some(balance), "{c}: a gapless chain");
            }
            let id = card["card_id"].as_str().unwrap();
            assert_eq!(
                s.json(&format!("/v1/cards/{id}"), KEY_CRM)["balance"].as_i64(),
                Some(balance)
            );
        }
        let usage =
            s.json(&format!("/v1/customers/{c}/usage?from=2026-09-20&to=2026-10-20"), KEY_CRM);
        let trips: Vec<(u64, i64)> = env
            .query(&format!("SELECT count(), sum(fee) FROM settlements WHERE customer_id = '{c}'"));
        let u = &usage["total"];
        assert_eq!(
            (u["trips"].as_u64(), u["fee"].as_i64(), u["balance"].as_i64()),
            (Some(trips[0].0), Some(trips[0].1), Some(last[0])),
            "{c}"
        );
    }
}

/// 401 and 403 on every GET route for every key: no key or a wrong one is 401; a key
/// without the route's role 403; a key with it gets past the guard (200, or a 4xx of the
/// handler's own, never 401/403).
fn every_route_for_every_key(s: &Server) {
    let routes: [(&str, &[&str]); 10] = [
        ("/v1/settlements/daily?date=2026-11-10", &["fin"]),
        ("/v1/clearing?date=2026-11-10", &["fin"]),
        ("/v1/reconciliation?date=2026-11-10", &["fin"]),
        ("/v1/arrears?date=2026-11-10", &["fin"]),
        ("/v1/customers/CU1/usage?from=2026-11-09&to=2026-11-11", &["crm", "pii"]),
        ("/v1/customers/CU1/statement?month=2026-11", &["crm", "pii"]),
        ("/v1/customers/segments?as_of=2026-11-30", &["crm", "pii"]),
        ("/v1/customers/churn-risk?as_of=2026-11-30", &["crm", "pii"]),
        ("/v1/cards/32011820220000123456", &["crm", "pii"]),
        ("/v1/plates/X1_0", &["pii"]),
    ];
    let keys = [
        ("none", None),
        ("wrong", Some("nope")),
        ("fin", Some(KEY_FIN)),
        ("crm", Some(KEY_CRM)),
        ("pii", Some(KEY_PII)),
        ("ops", Some(KEY_OPS)),
    ];
    for (path, allowed) in routes {
        for (name, key) in keys {
            let (status, body, _) = s.get(path, key, "application/json");
            let want = match (key, allowed.contains(&name)) {
                (None, _) | (Some("nope"), _) => Some(401),
                (_, false) => Some(403),
                (_, true) => None,
            };
            match want {
                Some(w) => assert_eq!(status, w, "{path} as {name}: {body}"),
                None => assert!(status == 200, "{path} as {name}: {status} {body}"),
            }
        }
    }
    // Plates: masked to crm, clear to pii, on every answer that shows one.
    let usage = "/v1/customers/CU1/usage?from=2026-11-09&to=2026-11-11";
    let plate_of = |v: &Value| v["cards"][0]["last_passage"]["plate"].as_str().unwrap().to_string();
    assert_eq!(plate_of(&s.json(usage, KEY_CRM)), "苏A1***5_0");
    assert_eq!(plate_of(&s.json(usage, KEY_PII)), PLATE);
    let (_, csv, _) = s.get(&format!("/v1/cards/{CARD}"), Some(KEY_CRM), "text/csv");
    assert!(!csv.contains(PLATE), "{csv}");
}

/// Every String column of every table of the database, searched for the plate's number.
fn no_plate_in_any_column(env: &Env) {
    let columns: Vec<(String, String)> = env.query(&format!(
        "SELECT table, name FROM system.columns WHERE database = '{}' AND type = 'String'",
        env.cfg.database
    ));
    assert!(columns.len() > 40, "{}", columns.len());
    for (table, column) in columns {
        let n: Vec<u64> = env.query(&format!(
            "SELECT count() FROM {table} WHERE position({column}, 'A12345_') > 0 OR position({column}, '苏A1') > 0"
        ));
        assert_eq!(n[0], 0, "{table}.{column} holds the plate");
    }
}
