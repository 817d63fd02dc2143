//! Any bytes as a lane-tx message: parsed, then settled by the engine (with a card opened,
//! so debits run too, and the late-record path), never a panic; every record accounted for.
#![no_main]

use gantry_core::output::{Batch, Source, Topic};
use gantry_core::{Engine, EngineConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = EngineConfig::default();
    let mut parsed = 0u64;
    gantry_core::parse::for_each_lane_record(data, &cfg.parse, |_, _| parsed += 1);
    let mut engine = Engine::new(cfg);
    let mut out = Batch::new();
    let src = Source {
        topic: Topic::LaneTx,
        partition: 0,
        offset: 0,
        timestamp_ms: Some(1_790_000_000_000),
    };
    engine.lane_message(gantry_fuzz::tariffs(), data, src, &mut out);
    let late = vec![false; out.late.len()];
    engine.settle_late(gantry_fuzz::tariffs(), &late, &mut out);
    let c = out.counts;
    assert_eq!(c.lane_records, parsed, "the engine met every record the parser yields");
    assert_eq!(c.lane_records, c.settled + c.lane_rejected + c.lane_duplicates);
});
