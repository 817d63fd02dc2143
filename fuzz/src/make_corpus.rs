//! Writes the seed corpus of every fuzz target into `DIR/<target>/` (default `fuzz/corpus`)
//! from the traffic generator: lane messages and account events as the generator sends them
//! (bad records included), the generator's tariff version, and checkpoint states of an
//! engine that settled the traffic.

use std::path::{Path, PathBuf};

use gantry_core::output::{Batch, Source, Topic};
use gantry_core::{Engine, EngineConfig};
use gantry_gen::{Network, Traffic, TrafficConfig};

/// Seeds per message target: enough variety (every kind the generator makes) for libFuzzer
/// to start from, few enough to load in a moment.
const MESSAGES_PER_TARGET: usize = 300;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let root: PathBuf = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()).into();
    let (seed, units, owners) = gantry_fuzz::NETWORK;
    let net = Network::new(seed, units, owners);
    let tariff =
        [net.tariff_toml().as_bytes(), &[gantry_fuzz::SEPARATOR], net.intervals_csv().as_bytes()]
            .concat();
    write(&root.join("tariff_version"), "generated", &tariff);
    let cfg = TrafficConfig {
        cards: 200,
        records: 5_000,
        seed: 11,
        bad_rate: 0.05,
        ..TrafficConfig::default()
    };
    let mut traffic = Traffic::new(cfg, &net);
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Batch::new();
    let (mut lane, mut acct) = (0usize, 0usize);
    let mut states = 0;
    let mut offset = 0;
    while let Some(m) = traffic.next_message() {
        offset += 1;
        let src =
            |topic| Source { topic, partition: 0, offset, timestamp_ms: Some(m.timestamp_ms) };
        match m.topic {
            gantry_gen::Topic::LaneTx => {
                if lane < MESSAGES_PER_TARGET && offset % 7 == 0 {
                    write(&root.join("lane_records"), &format!("g{lane}"), m.value);
                    lane += 1;
                }
                engine.lane_message(gantry_fuzz::tariffs(), m.value, src(Topic::LaneTx), &mut out);
            }
            gantry_gen::Topic::AccountEvents => {
                if acct < MESSAGES_PER_TARGET && (acct < 50 || offset % 3 == 0) {
                    write(&root.join("account_events"), &format!("g{acct}"), m.value);
                    acct += 1;
                }
                engine.account_message(m.value, src(Topic::AccountEvents), &mut out);
            }
        }
        if offset % 1_500 == 0 {
            let mut state = Vec::new();
            engine.write_state(&mut state);
            write(&root.join("engine_state"), &format!("g{states}"), &state);
            states += 1;
            out.clear();
        }
    }
    let mut state = Vec::new();
    Engine::new(EngineConfig::default()).write_state(&mut state);
    write(&root.join("engine_state"), "empty", &state);
    println!(
        "corpus in {}: {lane} lane messages, {acct} account events, {} states, 1 tariff",
        root.display(),
        states + 1
    );
}
