//! Tariff loading: validation errors name file, line and field; versions are immutable;
//! the store swaps snapshots without blocking readers.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use gantry_core::tariff::{TariffError, TariffSet, TariffStore, TariffVersion};

const CSV: &str = "interval_id,owner_id,length_m,fee_1,fee_2\nU1,OP1,1000,100,200\nU2,OP2,,150,\n";

fn toml(body: &str) -> String {
    format!("version = \"V1\"\neffective_from = \"2026-11-01T00:00:00+08:00\"\netc_discount_bp = 500\n{body}")
}

fn load(toml_text: &str, csv: &str) -> Result<TariffVersion, TariffError> {
    TariffVersion::from_sources(
        Path::new("v/tariff.toml"),
        toml_text,
        Path::new("v/intervals.csv"),
        csv,
        480,
    )
}

fn err(toml_text: &str, csv: &str) -> String {
    load(toml_text, csv).expect_err("should fail").to_string()
}

#[test]
fn a_minimal_version_loads() {
    let v = load(&toml(""), CSV).unwrap();
    assert_eq!(v.units.len(), 2);
    assert_eq!(v.unit(v.unit_index("U2").unwrap()).fee(2), None, "empty cell: class not tolled");
    assert_eq!(v.unit(v.unit_index("U2").unwrap()).fee(1), Some(150));
    assert_eq!(v.unit(0).fee(3), None, "missing column: class not tolled");
}

#[test]
fn errors_name_file_line_and_field() {
    let cases: &[(String, &str, &str)] = &[
        (toml("etc_discount_bp = 1\n"), CSV, "v/tariff.toml:4"),
        (toml("surprise = 1\n"), CSV, "v/tariff.toml:4: unknown field `surprise`"),
        (toml("").replace("500", "10001"), CSV, "v/tariff.toml:3: field `etc_discount_bp`"),
        (toml("").replace("2026-11-01T00:00:00+08:00", "Nov 1"), CSV, "v/tariff.toml:2: field `effective_from`"),
        (toml("[[time_discount]]\nintervals = [\"U9\"]\nvehicle_types = [1]\nfrom = \"00:00\"\nto = \"06:00\"\ndiscount_bp = 100\n"), CSV, "v/tariff.toml:5: field `time_discount.intervals`: unit `U9`"),
        (toml("[[time_discount]]\nintervals = [\"*\"]\nvehicle_types = [1]\nfrom = \"25:00\"\nto = \"06:00\"\ndiscount_bp = 100\n"), CSV, "v/tariff.toml:7: field `time_discount.from`"),
        (toml("[[time_discount]]\nintervals = [\"*\"]\nvehicle_types = [7]\nfrom = \"01:00\"\nto = \"06:00\"\ndiscount_bp = 100\n"), CSV, "v/tariff.toml:6: field `time_discount.vehicle_types`: 7 is not a vehicle class"),
        (toml("[[holiday_free]]\nstart = \"2026-10-08T00:00:00\"\nend = \"2026-10-01T00:00:00\"\nvehicle_types = [1]\n"), CSV, "v/tariff.toml:6: field `holiday_free.end`"),
        (toml(""), "interval_id,owner_id,fee_1\nU1,OP1,100\nU2,OP2,ten\n", "v/intervals.csv:3: field `fee_1`: `ten`"),
        (toml(""), "interval_id,owner_id,fee_1\nU1,OP1,100\nU1,OP2,5\n", "v/intervals.csv:3: field `interval_id`: unit `U1` appears twice"),
        (toml(""), "interval_id,owner_id,fee_1\nU1,,100\n", "v/intervals.csv:2: field `owner_id`"),
        (toml(""), "interval_id,owner_id,fee_5\nU1,OP1,100\n", "v/intervals.csv:1: field `fee_5`: unknown column"),
        (toml(""), "interval_id,fee_1\nU1,100\n", "v/intervals.csv:1: field `owner_id`: missing column"),
        (toml(""), "interval_id,owner_id,fee_1\nU1,OP1,-3\n", "v/intervals.csv:2: field `fee_1`: negative fee"),
        (toml(""), "interval_id,owner_id,fee_1\nU1,OP1,100,7\n", "v/intervals.csv:2"),
    ];
    for (t, c, want) in cases {
        let e = err(t, c);
        assert!(e.starts_with(want), "got `{e}`, want `{want}…`");
    }
}

#[test]
fn published_versions_are_immutable() {
    let set = TariffSet::default().with(load(&toml(""), CSV).unwrap()).unwrap();
    let again = set.with(load(&toml(""), CSV).unwrap()).err().unwrap().to_string();
    assert!(again.contains("already loaded"), "{again}");
    let same_time = load(&toml("").replace("\"V1\"", "\"V2\""), CSV).unwrap();
    assert!(set.with(same_time).err().unwrap().to_string().contains("same effective_from"));
}

#[test]
fn loading_does_not_block_or_disturb_readers() {
    let store = Arc::new(TariffStore::new(
        TariffSet::default().with(load(&toml(""), CSV).unwrap()).unwrap(),
    ));
    let t_before = 1_761_900_000_000; // 2025-10-31: before every version
    let t_v1 = 1_762_000_000_000 + 365 * 86_400_000; // late 2026-11: V1 in force, V2 not yet
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (store, stop, reads) = (store.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let snap = store.snapshot();
                assert!(snap.version_at(t_before).is_none());
                assert_eq!(&*snap.version_at(t_v1).expect("V1 stays in force").version, "V1");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..50 {
        let t = toml("")
            .replace("\"V1\"", &format!("\"V{}\"", i + 2))
            .replace("2026-11-01", &format!("{}-11-01", 2030 + i));
        store.add(load(&t, CSV).unwrap()).unwrap();
    }
    // Let the reader see the final set at least once before it stops.
    let seen = reads.load(Ordering::Relaxed);
    while reads.load(Ordering::Relaxed) <= seen {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(store.snapshot().versions().len(), 51);
    assert!(reads.load(Ordering::Relaxed) > 0);
}

/// A set's id names its content: the same versions give the same id however they were
/// loaded (order, process); any change of a file, or a version more or less, another id.
/// Replay finds the set a batch was priced with by this id.
#[test]
fn a_set_id_names_its_content() {
    let v1 = || load(&toml(""), CSV).unwrap();
    let v2 = || {
        let t = toml("").replace("\"V1\"", "\"V2\"").replace("2026-11-01", "2026-12-01");
        load(&t, CSV).unwrap()
    };
    let a = TariffSet::of([v1(), v2()]).unwrap();
    let b = TariffSet::of([v2(), v1()]).unwrap();
    assert_eq!(a.id(), b.id(), "order of loading does not matter");
    assert_ne!(a.id(), TariffSet::of([v1()]).unwrap().id(), "a version fewer");
    let edited = load(&toml("").replace("etc_discount_bp = 500", "etc_discount_bp = 501"), CSV);
    let edited = edited.unwrap();
    assert_eq!(edited.version, v1().version);
    assert_ne!(edited.source_hash(), v1().source_hash(), "same name, other content");
    assert_ne!(TariffSet::of([edited]).unwrap().id(), TariffSet::of([v1()]).unwrap().id());
    assert_ne!(TariffSet::default().id(), 0, "0 means no set in the journal");
    // Rebuilt from its sources (as replay does from ClickHouse), a version is the same one.
    let again = TariffVersion::build(Path::new("x"), v1().sources(), 480).unwrap();
    assert_eq!(TariffSet::of([again]).unwrap().id(), TariffSet::of([v1()]).unwrap().id());
}
