//! Any bytes as an account-events message: parsed and applied, never a panic; every event
//! accounted for.
#![no_main]

use gantry_core::output::{Batch, Source, Topic};
use gantry_core::{Engine, EngineConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = EngineConfig::default();
    let mut parsed = 0u64;
    gantry_core::parse::for_each_account_event(data, &cfg.parse, |_, _| parsed += 1);
    let mut engine = Engine::new(cfg);
    let mut out = Batch::new();
    let src = Source { topic: Topic::AccountEvents, partition: 0, offset: 0, timestamp_ms: None };
    engine.account_message(data, src, &mut out);
    let c = out.counts;
    assert_eq!(c.account_events, parsed);
    assert_eq!(c.account_events, c.events_applied + c.events_rejected + c.events_duplicates);
});
