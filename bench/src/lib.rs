//! Shared fixtures for the benchmarks: a generated network and traffic, and the naive
//! baseline parser the real one is measured against.

#![forbid(unsafe_code)]

use gantry_core::parse::ParseConfig;
use gantry_core::tariff::TariffSet;
use gantry_core::{Batch, Engine, EngineConfig, Source, Topic};
use gantry_gen::{Network, Traffic, TrafficConfig, OFFSET_MIN};
use serde::Deserialize;

pub struct Fixture {
    pub tariffs: TariffSet,
    /// Lane messages (one record each), in production order, back to back in one buffer as
    /// the pipeline holds them (a fetched chunk), not one allocation each: scattered messages
    /// would make the benchmark pay a cache miss per message that production does not.
    lane_bytes: Vec<u8>,
    /// Each lane message's range of `lane_bytes` and its timestamp.
    lane_index: Vec<(std::ops::Range<usize>, i64)>,
    /// Engine state after every card was opened.
    pub opened_state: Vec<u8>,
    /// The accounts alone, after every card was opened.
    pub accounts_state: Vec<u8>,
    pub cfg: EngineConfig,
}

/// A realistic mixed workload: 2,000 units of 24 owners; `cards` cards with Zipf activity;
/// ~70% class 1, 8% multi-unit, 8% CPC, 2% duplicates, 0.2% bad, 0.1% unknown cards.
pub fn fixture(cards: usize, records: u64) -> Fixture {
    let net = Network::new(11, 2_000, 24);
    let v = net.tariff_version().expect("generated tariff is valid");
    let tariffs = TariffSet::default().with(v).expect("one version");
    // Steady state: the dedup table is sized for the window (`dedup_expected_ids`), as in
    // production, so the benchmark does not measure its one-off growth from empty.
    let cfg = EngineConfig {
        max_future_skew_ms: i64::MAX / 4,
        dedup_expected_ids: records as usize,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(cfg);
    let mut out = Batch::new();
    // One day of traffic: a partition sees millions of records a day and the dedup window is
    // swept every 21 hours of record time; spread over the generator's default 14 days, these
    // records would sweep a full table 16 times per 100k records, a thousand times more often
    // than in production.
    let mut traffic = Traffic::new(
        TrafficConfig { cards, records, topup_rate: 0.0, days: 1, ..TrafficConfig::default() },
        &net,
    );
    let mut lane_bytes = Vec::new();
    let mut lane_index = Vec::new();
    let mut offset = 0;
    while let Some(m) = traffic.next_message() {
        offset += 1;
        match m.topic {
            gantry_gen::Topic::AccountEvents => {
                engine.account_message(
                    m.value,
                    Source {
                        topic: Topic::AccountEvents,
                        partition: 0,
                        offset,
                        timestamp_ms: Some(m.timestamp_ms),
                    },
                    &mut out,
                );
                out.clear();
            }
            gantry_gen::Topic::LaneTx => {
                lane_bytes.extend_from_slice(m.value);
                lane_index
                    .push((lane_bytes.len() - m.value.len()..lane_bytes.len(), m.timestamp_ms));
            }
        }
    }
    let mut opened_state = Vec::new();
    engine.write_state(&mut opened_state);
    let mut accounts_state = Vec::new();
    engine.accounts().write_to(&mut accounts_state);
    Fixture { tariffs, lane_bytes, lane_index, opened_state, accounts_state, cfg }
}

/// Lane messages handed to the engine per call in the benchmarks, as the pipeline hands it a
/// run of lane messages from one fetched chunk; the batch is checked for closing between runs.
/// The pipeline's most (`LANE_RUN_MESSAGES_MAX` in gantry-pipeline's worker): 256 here ran
/// 1.2% faster than the pipeline can.
pub const RUN_MESSAGES: usize = 64;

/// The fixture's lane messages with their sources, in runs of [`RUN_MESSAGES`].
pub fn runs(fx: &Fixture) -> impl Iterator<Item = impl Iterator<Item = (&[u8], Source)> + '_> + '_ {
    (0..fx.lane_index.len()).step_by(RUN_MESSAGES).map(move |from| {
        fx.lane_index[from..(from + RUN_MESSAGES).min(fx.lane_index.len())]
            .iter()
            .enumerate()
            .map(move |(k, (r, ts))| (&fx.lane_bytes[r.clone()], lane_source(from + k, *ts)))
    })
}

/// One pass of the core path over the fixture as the pipeline feeds the engine (runs of lane
/// messages; the batch handed on every 10k records). Shared by the criterion benchmark and
/// `core_loop`, and not inlined, so both time the same machine code and profilers can count
/// exactly this (`valgrind --tool=callgrind --toggle-collect=gantry_bench::core_pass`).
#[inline(never)]
pub fn core_pass(engine: &mut Engine, fx: &Fixture, out: &mut Batch) {
    for run in runs(fx) {
        engine.lane_messages(&fx.tariffs, run, out);
        if out.counts.lane_records >= 10_000 {
            out.clear();
        }
    }
}

/// [`core_pass`] one message at a time (no warmed groups).
#[inline(never)]
pub fn core_pass_per_message(engine: &mut Engine, fx: &Fixture, out: &mut Batch) {
    for (m, src) in fx.sourced_lanes() {
        engine.lane_message(&fx.tariffs, m, src, out);
        if out.counts.lane_records >= 10_000 {
            out.clear();
        }
    }
}

/// The source the benchmarks give the engine for lane message `i`: partition 0, its
/// position as its offset.
fn lane_source(i: usize, timestamp_ms: i64) -> Source {
    Source {
        topic: Topic::LaneTx,
        partition: 0,
        offset: i as i64,
        timestamp_ms: Some(timestamp_ms),
    }
}

impl Fixture {
    /// The lane messages and their timestamps, in production order.
    pub fn lanes(&self) -> impl ExactSizeIterator<Item = (&[u8], i64)> + '_ {
        self.lane_index.iter().map(|(r, ts)| (&self.lane_bytes[r.clone()], *ts))
    }

    /// The lane messages with the sources the engine is given for them (as in [`runs`]).
    pub fn sourced_lanes(&self) -> impl Iterator<Item = (&[u8], Source)> + '_ {
        self.lanes().enumerate().map(|(i, (m, ts))| (m, lane_source(i, ts)))
    }
}

pub fn parse_config() -> ParseConfig {
    ParseConfig { network_utc_offset_min: OFFSET_MIN }
}

/// The naive baseline: `serde_json::from_slice` into an owned struct.
#[allow(non_snake_case, dead_code)]
#[derive(Deserialize)]
pub struct NaiveLaneTx {
    tradeId: String,
    gantryId: String,
    tollIntervalId: String,
    transTime: String,
    mediaType: u8,
    cpuCardId: Option<String>,
    obuId: Option<String>,
    vehiclePlate: Option<String>,
    vehicleType: u8,
    #[serde(default)]
    vehicleClass: u8,
    axleCount: Option<u8>,
    vehicleSeat: Option<u16>,
    passId: Option<String>,
    fee: Option<i64>,
}

/// Serde with borrowed `&str` fields: the best a generic deserializer does.
#[allow(non_snake_case, dead_code)]
#[derive(Deserialize)]
pub struct BorrowedLaneTx<'a> {
    tradeId: &'a str,
    gantryId: &'a str,
    tollIntervalId: &'a str,
    transTime: &'a str,
    mediaType: u8,
    cpuCardId: Option<&'a str>,
    obuId: Option<&'a str>,
    vehiclePlate: Option<&'a str>,
    vehicleType: u8,
    #[serde(default)]
    vehicleClass: u8,
    axleCount: Option<u8>,
    vehicleSeat: Option<u16>,
    passId: Option<&'a str>,
    fee: Option<i64>,
}
