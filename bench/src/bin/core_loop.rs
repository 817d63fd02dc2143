//! Runs the core path over the benchmark fixture in a loop, for profilers (`perf record`,
//! `valgrind --tool=callgrind`): `core_loop [ROUNDS] [CARDS] [grouped|single]`. Prints
//! records/s per round. A small CARDS (e.g. 2000) keeps every account in cache, which shows
//! what memory costs; `single` feeds the engine one message at a time (no warmed groups).

#![forbid(unsafe_code)]
use gantry_bench::{core_pass, core_pass_per_message, fixture};
use gantry_core::{Batch, Engine};
use std::time::Instant;

/// mimalloc keeps freed memory for reuse: with the system allocator, batch-sized buffers
/// went back to the kernel and came back as fresh zeroed pages (~14% of Gantry's CPU during
/// a drain was the kernel clearing pages).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let cards: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let grouped = std::env::args().nth(3).is_none_or(|m| m != "single");
    let fx = fixture(cards, 100_000);
    let mut out = Batch::with_capacity(10_000);
    for round in 0..rounds {
        // Every round starts from the same state, so every record is new again.
        let mut engine = Engine::read_state(fx.cfg, &fx.opened_state).expect("state");
        let t = Instant::now();
        if grouped {
            core_pass(&mut engine, &fx, &mut out);
        } else {
            core_pass_per_message(&mut engine, &fx, &mut out);
        }
        println!(
            "round {round}: {:.0} records/s",
            fx.lanes().len() as f64 / t.elapsed().as_secs_f64()
        );
    }
}
