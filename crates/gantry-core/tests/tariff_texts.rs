//! The engine copies a tariff's texts (version name, unit ids, owner ids) into a batch once
//! and lets later rows of the same batch share them. Rows must read exactly the texts they
//! would with every record in a batch of its own: checked with six versions whose owner ids
//! differ, records shuffled so the versions alternate (more of them than the engine keeps
//! texts for at once), and batches cleared at odd points.

use gantry_core::output::{Batch, Source, Topic};
use gantry_core::tariff::{TariffSet, TariffVersion};
use gantry_core::{Engine, EngineConfig};
use gantry_gen::{Network, Traffic, TrafficConfig, OFFSET_MIN};
use std::path::Path;

const VERSIONS: usize = 6;

fn tariffs(net: &Network) -> TariffSet {
    let mut set = TariffSet::default();
    for k in 0..VERSIONS {
        // Versions from the traffic's first day (2026-09-28) in four-hour steps.
        let toml = net
            .tariff_toml()
            .replace("32-20260101-001", &format!("32-20260101-00{k}"))
            .replace("2026-01-01T00:00:00+08:00", &format!("2026-09-28T{:02}:00:00+08:00", 4 * k));
        // Each version's owner ids are its own.
        let csv: String = net
            .intervals_csv()
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let mut cols: Vec<String> = line.split(',').map(str::to_string).collect();
                if i > 0 {
                    cols[1] = format!("{}V{k}", cols[1]);
                }
                cols.join(",") + "\n"
            })
            .collect();
        let v = TariffVersion::from_sources(
            Path::new("tariff.toml"),
            &toml,
            Path::new("intervals.csv"),
            &csv,
            OFFSET_MIN,
        )
        .expect("valid version");
        set = set.with(v).expect("distinct versions");
    }
    set
}

/// Settlements as (tradeId, version) and splits as (tradeId, interval, owner, fee), as text.
type Rows = (Vec<(String, String)>, Vec<(String, String, String, i64)>);

fn rows(b: &Batch) -> Rows {
    let s = b
        .settlements
        .iter()
        .map(|r| (b.text(r.trade_id).to_string(), b.text(r.tariff_version).to_string()))
        .collect();
    let p = b
        .splits
        .iter()
        .map(|r| {
            (
                b.text(r.trade_id).to_string(),
                b.text(r.interval_id).to_string(),
                b.text(r.owner_id).to_string(),
                r.fee,
            )
        })
        .collect();
    (s, p)
}

#[test]
fn shared_tariff_texts_read_as_their_own() {
    let net = Network::new(9, 40, 5);
    let tariffs = tariffs(&net);
    let cfg = TrafficConfig {
        cards: 200,
        records: 6_000,
        days: 1,
        start_date: (2026, 9, 28),
        ..TrafficConfig::default()
    };
    let mut traffic = Traffic::new(cfg, &net);
    let (mut events, mut lanes) = (Vec::new(), Vec::new());
    while let Some(m) = traffic.next_message() {
        let entry = (m.value.to_vec(), m.timestamp_ms);
        if m.topic == gantry_gen::Topic::LaneTx {
            lanes.push(entry);
        } else {
            events.push(entry);
        }
    }
    // A fixed shuffle: consecutive records then fall in different versions.
    let n = lanes.len();
    let lanes: Vec<_> = (0..n).map(|i| lanes[(i * 7_919) % n].clone()).collect();
    let src = |topic, offset: usize, ts| Source {
        topic,
        partition: 0,
        offset: offset as i64,
        timestamp_ms: Some(ts),
    };
    let opened = |engine: &mut Engine| {
        let mut out = Batch::new();
        for (i, (m, ts)) in events.iter().enumerate() {
            engine.account_message(m, src(Topic::AccountEvents, i, *ts), &mut out);
        }
    };

    // Each message in a batch of its own: nothing to share.
    let mut alone =
        Engine::new(EngineConfig { max_future_skew_ms: i64::MAX / 4, ..EngineConfig::default() });
    opened(&mut alone);
    let mut want = (Vec::new(), Vec::new());
    let mut versions_seen = std::collections::BTreeSet::new();
    for (i, (m, ts)) in lanes.iter().enumerate() {
        let mut out = Batch::new();
        alone.lane_message(&tariffs, m, src(Topic::LaneTx, i, *ts), &mut out);
        let (s, p) = rows(&out);
        versions_seen.extend(s.iter().map(|r| r.1.clone()));
        want.0.extend(s);
        want.1.extend(p);
    }
    assert_eq!(versions_seen.len(), VERSIONS, "every version prices some records");
    assert!(want.1.len() > want.0.len(), "some records pass several units");

    // One engine, batches shared by many records and cleared at odd points, runs of messages.
    let mut shared =
        Engine::new(EngineConfig { max_future_skew_ms: i64::MAX / 4, ..EngineConfig::default() });
    opened(&mut shared);
    let mut got = (Vec::new(), Vec::new());
    let mut out = Batch::new();
    for (r, run) in lanes.chunks(53).enumerate() {
        let base = r * 53;
        shared.lane_messages(
            &tariffs,
            run.iter()
                .enumerate()
                .map(|(k, (m, ts))| (m.as_slice(), src(Topic::LaneTx, base + k, *ts))),
            &mut out,
        );
        if r % 3 == 2 {
            let (s, p) = rows(&out);
            got.0.extend(s);
            got.1.extend(p);
            out.clear();
        }
    }
    let (s, p) = rows(&out);
    got.0.extend(s);
    got.1.extend(p);
    assert_eq!(got.0, want.0);
    assert_eq!(got.1, want.1);
}
