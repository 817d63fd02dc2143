//! Hot-stage benchmarks of the pure core, each with its baseline in the same run:
//! parse (ours vs serde owned vs serde borrowed), dedup, pricing, debit, and the whole
//! per-partition path (parse → price → dedup → debit → rows) on a realistic mixed batch, and
//! the encoding of a batch's rows for ClickHouse.

#![forbid(unsafe_code)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gantry_bench::{
    core_pass, core_pass_per_message, fixture, parse_config, BorrowedLaneTx, NaiveLaneTx,
};
use gantry_clickhouse::{encode_batch, TopicNames};
use gantry_core::accounts::Accounts;
use gantry_core::codec::Reader;
use gantry_core::dedup::{DedupSet, IdKind, DEFAULT_WINDOW_MS};
use gantry_core::parse::{for_each_lane_record, parse_lane_record};
use gantry_core::pricing::price;
use gantry_core::record::CardId;
use gantry_core::{Batch, Engine};

/// mimalloc keeps freed memory for reuse: with the system allocator, batch-sized buffers
/// went back to the kernel and came back as fresh zeroed pages (~14% of Gantry's CPU during
/// a drain was the kernel clearing pages).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CARDS: usize = 200_000;
const RECORDS: u64 = 100_000;

fn benches(c: &mut Criterion) {
    let fx = fixture(CARDS, RECORDS);
    let valid: Vec<&[u8]> = fx
        .lanes()
        .map(|(m, _)| m)
        .filter(|m| serde_json::from_slice::<NaiveLaneTx>(m).is_ok())
        .collect();
    let bytes: u64 = valid.iter().map(|m| m.len() as u64).sum();
    eprintln!(
        "fixture: {} lane messages, {} well-formed, {:.0} bytes each on average",
        fx.lanes().len(),
        valid.len(),
        bytes as f64 / valid.len() as f64
    );
    let pc = parse_config();

    for (group, throughput) in [
        ("parse_bytes", Throughput::Bytes(bytes)),
        ("parse_records", Throughput::Elements(valid.len() as u64)),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(throughput);
        g.bench_function("gantry", |b| {
            b.iter(|| {
                let mut n = 0u64;
                for m in &valid {
                    for_each_lane_record(m, &pc, |_, r| n += r.is_ok() as u64);
                }
                black_box(n)
            })
        });
        g.bench_function("serde_owned_baseline", |b| {
            b.iter(|| {
                let mut n = 0u64;
                for m in &valid {
                    n += serde_json::from_slice::<NaiveLaneTx>(m).is_ok() as u64;
                }
                black_box(n)
            })
        });
        g.bench_function("serde_borrowed", |b| {
            b.iter(|| {
                let mut n = 0u64;
                for m in &valid {
                    n += serde_json::from_slice::<BorrowedLaneTx>(m).is_ok() as u64;
                }
                black_box(n)
            })
        });
        g.finish();
    }

    let parsed: Vec<_> = valid.iter().filter_map(|m| parse_lane_record(m, &pc).ok()).collect();
    let n = parsed.len() as u64;

    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.bench_function("price", |b| {
        let mut splits = Vec::with_capacity(8);
        b.iter(|| {
            let mut total = 0i64;
            for tx in &parsed {
                if let Some(v) = fx.tariffs.version_at(tx.trans_time_ms) {
                    splits.clear();
                    if let Ok(p) = price(tx, v, pc.network_utc_offset_min, &mut splits) {
                        total += p.fee;
                    }
                }
            }
            black_box(total)
        })
    });
    // Dedup against a window already holding 1M ids (a partition's busy days).
    let mut prefilled = DedupSet::new(DEFAULT_WINDOW_MS);
    let t0 = parsed[0].trans_time_ms;
    for i in 0..1_000_000u64 {
        prefilled.check_and_insert(IdKind::Trade, &format!("G00150000000000{i:020}"), t0);
    }
    let mut state = Vec::new();
    prefilled.write_to(&mut state);
    g.bench_function("dedup", |b| {
        b.iter_batched(
            || DedupSet::read_from(&mut Reader::new(&state)).expect("state"),
            |mut d| {
                let mut dups = 0;
                for tx in &parsed {
                    dups += (d.check_and_insert(IdKind::Trade, &tx.trade_id, tx.trans_time_ms)
                        == gantry_core::dedup::Verdict::Duplicate)
                        as u32;
                }
                black_box(dups)
            },
            BatchSize::LargeInput,
        )
    });
    // The same ids as the engine feeds them: a group's slots prefetched, then each decided.
    g.bench_function("dedup_warmed", |b| {
        b.iter_batched(
            || DedupSet::read_from(&mut Reader::new(&state)).expect("state"),
            |mut d| {
                let mut dups = 0;
                for group in parsed.chunks(gantry_core::engine::WARM_GROUP_RECORDS) {
                    let mut keys = [None; gantry_core::engine::WARM_GROUP_RECORDS];
                    for (tx, k) in group.iter().zip(keys.iter_mut()) {
                        *k = Some(d.warm(IdKind::Trade, &tx.trade_id, tx.trans_time_ms));
                    }
                    for (tx, k) in group.iter().zip(keys) {
                        let k = k.expect("warmed above");
                        dups += (d.check_and_insert_key(k, tx.trans_time_ms)
                            == gantry_core::dedup::Verdict::Duplicate)
                            as u32;
                    }
                }
                black_box(dups)
            },
            BatchSize::LargeInput,
        )
    });
    let cards: Vec<CardId> = parsed.iter().filter_map(|t| t.card_id).collect();
    g.bench_function("debit", |b| {
        b.iter_batched(
            || Accounts::read_from(&mut Reader::new(&fx.accounts_state)).expect("accounts"),
            |mut a| {
                let mut listed = 0;
                for c in &cards {
                    if let Some(m) = a.apply(*c, -589) {
                        listed += m.change.is_some() as u32;
                    }
                }
                black_box(listed)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("core_path");
    g.throughput(Throughput::Elements(fx.lanes().len() as u64));
    g.sample_size(20);
    // As the pipeline feeds the engine: runs of lane messages (warmed groups).
    g.bench_function("mixed_batch", |b| {
        b.iter_custom(|iters| time_core_path(&fx, iters, core_pass))
    });
    // The same one message at a time: what warming the lookups of a group saves.
    g.bench_function("mixed_batch_per_message", |b| {
        b.iter_custom(|iters| time_core_path(&fx, iters, core_pass_per_message))
    });
    g.finish();

    // The ClickHouse side of landing a batch: sort each table's rows by its ORDER BY key and
    // encode them as Native blocks, for one pipeline-sized batch (all 100k records).
    let mut engine = Engine::read_state(fx.cfg, &fx.opened_state).expect("state");
    let mut batch = Batch::with_capacity(fx.lanes().len());
    for (m, src) in fx.sourced_lanes() {
        engine.lane_message(&fx.tariffs, m, src, &mut batch);
    }
    let mut topics = TopicNames {
        lane_tx: "gantry.lane-tx".into(),
        account_events: "gantry.account-events".into(),
        plates: None,
    };
    let mut g = c.benchmark_group("clickhouse");
    g.throughput(Throughput::Elements(batch.counts.lane_records));
    g.sample_size(20);
    // Without and with plates sealed (contract §5.2): what sealing adds to landing.
    g.bench_function("encode_batch", |b| b.iter(|| black_box(encode_batch(&batch, 0, 1, &topics))));
    let keys = gantry_pii::Keyring::from_toml(gantry_pii::TEST_KEYS).expect("test keys");
    topics.plates = Some(std::sync::Arc::new(keys));
    g.bench_function("encode_batch_sealed", |b| {
        b.iter(|| black_box(encode_batch(&batch, 0, 1, &topics)))
    });
    g.finish();
}

/// Times `iters` passes of `pass` over the fixture, each from the opened state, and only the
/// passes: restoring the engine (every record must be new again) and dropping it are not part
/// of the core path. A pipeline worker keeps its engine and reuses its batch for ever, so
/// `out` is reused here too (its arenas grow in the first pass, as a worker's do once).
fn time_core_path(
    fx: &gantry_bench::Fixture,
    iters: u64,
    pass: fn(&mut Engine, &gantry_bench::Fixture, &mut Batch),
) -> std::time::Duration {
    let mut out = Batch::with_capacity(10_000);
    let mut total = std::time::Duration::ZERO;
    for _ in 0..iters {
        let mut engine = Engine::read_state(fx.cfg, &fx.opened_state).expect("state");
        out.clear();
        let started = std::time::Instant::now();
        pass(&mut engine, fx, &mut out);
        black_box(out.counts);
        total += started.elapsed();
    }
    total
}

criterion_group!(core, benches);
criterion_main!(core);
