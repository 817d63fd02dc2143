//! What sealing a plate costs per settlement row (the hot path pays it once per row).

use criterion::{criterion_group, criterion_main, Criterion};
use gantry_pii::{Keyring, SealBuf};

const KEYS: &str = "current = \"k1\"\nlookup_key = \"0101010101010101010101010101010101010101010101010101010101010101\"\n[[keys]]\nid = \"k1\"\nkey = \"1111111111111111111111111111111111111111111111111111111111111111\"\n";

fn seal(c: &mut Criterion) {
    let k = Keyring::from_toml(KEYS).unwrap();
    let plate = "苏A12345_0".as_bytes();
    let mut buf = SealBuf::default();
    c.bench_function("seal_plate", |b| {
        b.iter(|| std::hint::black_box(k.seal(std::hint::black_box(plate), &mut buf)).0.len())
    });
}

criterion_group!(benches, seal);

fn seal_cached(c: &mut Criterion) {
    let k = Keyring::from_toml(KEYS).unwrap();
    let plates: Vec<String> = (0..20_000).map(|i| format!("苏A{i:05}_0")).collect();
    let mut i = 0;
    c.bench_function("seal_plate_cached", |b| {
        b.iter(|| {
            i = (i + 7919) % plates.len();
            k.with_sealed(plates[i].as_bytes(), |e, h| e.len() + h.len())
        })
    });
}

criterion_group!(cached, seal_cached);

fn lookup(c: &mut Criterion) {
    let k = Keyring::from_toml(KEYS).unwrap();
    c.bench_function("lookup_hash", |b| {
        b.iter(|| k.lookup_hash(std::hint::black_box("苏A12345_0")).len())
    });
}

criterion_group!(hash, lookup);
criterion_main!(benches, cached, hash);
