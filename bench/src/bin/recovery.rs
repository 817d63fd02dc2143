//! Recovery's own work on a large partition: the state of 1M card accounts and 10M
//! remembered trade ids (the fault issue's figure), checkpointed to ClickHouse, then read
//! back as recovery reads it — the newest checkpoint's batch number, then its row
//! (`Store::latest_checkpoint`) — and decoded (`Engine::read_state`). Beside each figure, a
//! baseline from the same run: copying the state's bytes once (the least any restore
//! costs). Replay after the checkpoint and the group's rebalance are not in it: replay is
//! at most `checkpoint_every_batches` batches at the engine's rate, the rebalance is the
//! broker's. Needs ClickHouse on 127.0.0.1:8123; uses (and drops) its own database.
//!
//! `cargo run --release -p gantry-bench --bin recovery -- [--accounts N] [--ids N] [--rounds N]`

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use clap::Parser;
use gantry_clickhouse::{CheckpointRecord, Store};
use gantry_core::accounts::Accounts;
use gantry_core::dedup::{DedupSet, IdKind, DEFAULT_WINDOW_MS};
use gantry_core::record::{CardId, CardType};
use gantry_core::{Engine, EngineConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    #[arg(long, default_value_t = 10_000_000)]
    ids: u64,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse: String,
}

/// The engine state `Engine::write_state` would write for these ids and accounts (trade
/// dedup set, event dedup set, accounts), built directly: settling 10M generated records
/// to get it would take longer than everything measured.
fn state(args: &Args) -> Vec<u8> {
    let t0 = 1_790_000_000_000;
    let mut trades = DedupSet::with_capacity(DEFAULT_WINDOW_MS, args.ids as usize);
    for i in 0..args.ids {
        // Spread over six days of the window, as a week's traffic is.
        let t = t0 + (i as i64 % 6_000) * 86_400;
        trades.check_and_insert(IdKind::Trade, &format!("G0015320030010102026{i:016}"), t);
    }
    let mut accounts = Accounts::new(0);
    for i in 0..args.accounts {
        let card = CardId::parse(&format!("3201{i:016}")).expect("digits");
        let _ = accounts.open(
            card,
            &format!("CU{:08}", i * 4 / 5),
            CardType::StoredValue,
            1,
            10_000,
            0,
        );
    }
    let mut out = Vec::new();
    trades.write_to(&mut out);
    DedupSet::new(DEFAULT_WINDOW_MS).write_to(&mut out);
    accounts.write_to(&mut out);
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let built = Instant::now();
    let state = state(&args);
    println!(
        "state: {} accounts, {} trade ids: {:.1} MiB (built in {:.1} s)",
        args.accounts,
        args.ids,
        state.len() as f64 / (1 << 20) as f64,
        built.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store =
        Store::new(&args.clickhouse, &format!("gantry_bench_recovery_{}", std::process::id()));
    rt.block_on(store.apply_schema())?;
    let rec = CheckpointRecord {
        gantry_partition: 0,
        batch_seq: 1,
        lane_next: 0,
        acct_next: 0,
        state: state.clone(),
        written_at: 0,
    };
    let t = Instant::now();
    rt.block_on(store.write_checkpoint(&rec))?;
    println!("checkpoint write: {:.0} ms", ms(t.elapsed()));
    for round in 1..=args.rounds {
        let t = Instant::now();
        let copy = state.clone();
        let copied = t.elapsed();
        std::hint::black_box(&copy);
        let t = Instant::now();
        let c = rt.block_on(store.latest_checkpoint(0))?.expect("written above");
        let read = t.elapsed();
        assert_eq!(c.state.len(), state.len(), "the checkpoint read back whole");
        let t = Instant::now();
        let engine = Engine::read_state(EngineConfig::default(), &c.state)?;
        let decoded = t.elapsed();
        assert_eq!(
            (engine.dedup().len() as u64, engine.accounts().len() as u64),
            (args.ids, args.accounts)
        );
        println!(
            "round {round}: read {:.0} ms + decode {:.0} ms = {:.0} ms; one copy of the bytes {:.0} ms (read {:.1}x, decode {:.1}x a copy)",
            ms(read),
            ms(decoded),
            ms(read + decoded),
            ms(copied),
            ms(read) / ms(copied),
            ms(decoded) / ms(copied)
        );
    }
    rt.block_on(store.drop_database())?;
    Ok(())
}
