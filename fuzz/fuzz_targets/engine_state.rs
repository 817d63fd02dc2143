//! Any bytes as a checkpoint's state: read back or refused with an error, never a panic (a
//! corrupt checkpoint must fail recovery, not crash it). A state that reads writes a state
//! that reads to the same ids and accounts (not the same bytes: remembered ids are written
//! in their table's order, which depends on the order they were inserted in).
#![no_main]

use gantry_core::{Engine, EngineConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(engine) = Engine::read_state(EngineConfig::default(), data) {
        let mut again = Vec::new();
        engine.write_state(&mut again);
        let reread = Engine::read_state(EngineConfig::default(), &again).expect("own state reads");
        let mut third = Vec::new();
        reread.write_state(&mut third);
        assert_eq!(again.len(), third.len());
        assert_eq!(engine.dedup().len(), reread.dedup().len());
        assert_eq!(engine.accounts().len(), reread.accounts().len());
    }
});
