//! Prints the measured memory per remembered id (dedup) and per card account at several
//! sizes: the figures quoted in the README.

#![forbid(unsafe_code)]

use gantry_core::accounts::Accounts;
use gantry_core::dedup::{DedupSet, IdKind, DEFAULT_WINDOW_MS};
use gantry_core::record::{CardId, CardType};

fn main() {
    let t0 = 1_790_000_000_000;
    println!("dedup: bytes per remembered id (16-byte slot + hash-table overhead)");
    for n in [100_000u64, 1_000_000, 3_000_000, 6_000_000] {
        let mut d = DedupSet::new(DEFAULT_WINDOW_MS);
        for i in 0..n {
            d.check_and_insert(IdKind::Trade, &format!("G0015320030010102026{i:016}"), t0);
        }
        println!("  {n:>9} ids: {:.1} B/id", d.allocated_bytes() as f64 / n as f64);
    }
    println!("accounts: bytes per account (32-byte record + index), customer directory separately");
    for n in [100_000u64, 1_000_000, 5_000_000] {
        let mut a = Accounts::new(0);
        for i in 0..n {
            let card = CardId::parse(&format!("3201{i:016}")).expect("digits");
            let _ = a.open(card, &format!("CU{:08}", i * 4 / 5), CardType::StoredValue, 1, 1000, 0);
        }
        println!(
            "  {n:>9} accounts: {:.1} B/account; customers ({} for {n} cards): {:.1} B/account",
            a.account_bytes() as f64 / n as f64,
            n * 4 / 5,
            a.customer_bytes() as f64 / n as f64
        );
    }
}
