//! The invariants checked after every schedule (issue 15, item 3), each over what the
//! simulated store and status topic hold at the end:
//!
//! * every table holds each batch at most once, and only batches the journal commits;
//! * each partition's committed journal is the batches 1..n with ranges that continue one
//!   another from offset 0 to the logs' ends (every input message in exactly one batch),
//!   and a batch number is never committed with two different contents;
//! * no input message has rows in two batches;
//! * every card's ledger, in the order the engine applied it (batch, then place in the
//!   batch), is a chain: each balance is the one before plus the movement;
//! * the rollups equal their sources (clearing against splits, usage against settlements);
//! * the last status-list message of each card says what its last status row says;
//! * the rows — rollups summed by their key — are exactly those of the crash-free run of
//!   the same input (determinism: faults change when things happen, never what comes out).

use std::collections::BTreeMap;

use crate::world::{Row, World, TABLES};

/// Rows of every table with their multiplicity, the rollups summed per key.
pub type Canonical = BTreeMap<Row, u64>;

/// A clearing row's key: day, owner, issuer, vehicle class, medium.
type ClearingKey = (i32, String, String, u8, u8);

/// A card's `card_activity` rows summed: its customer, entries, and the last entry's
/// (batch, row, balance).
type CardSum = (String, u32, (u64, u32, i64));

/// What `world` holds, in the form two runs are compared in: a rollup row per key with
/// its sums over batches (how a query reads it), every other row as written.
pub fn canonical(world: &World) -> Canonical {
    let st = world.store.lock().expect("store");
    let mut out = Canonical::new();
    let mut clearing: BTreeMap<ClearingKey, (u64, i64)> = BTreeMap::new();
    let mut usage: BTreeMap<(i32, String), (u64, i64, u64, i64)> = BTreeMap::new();
    let mut cards: BTreeMap<String, CardSum> = BTreeMap::new();
    for t in TABLES {
        for w in st.tables.get(t).into_iter().flatten() {
            for (_, r) in &w.rows {
                match r {
                    Row::Card { card, customer, entries, last } => {
                        let e = cards.entry(card.clone()).or_default();
                        if !customer.is_empty() {
                            e.0 = customer.clone();
                        }
                        e.1 += entries;
                        if *entries > 0 {
                            e.2 = e.2.max((w.seq, last.0, last.1));
                        }
                    }
                    Row::Clearing { day, owner, issuer, class, medium, n, fee } => {
                        let k = (*day, owner.clone(), issuer.clone(), *class, *medium);
                        let e = clearing.entry(k).or_default();
                        (e.0, e.1) = (e.0 + n, e.1 + fee);
                    }
                    Row::Usage { day, card, trips, fee, topups, topup_amount } => {
                        let e = usage.entry((*day, card.clone())).or_default();
                        *e = (e.0 + trips, e.1 + fee, e.2 + topups, e.3 + topup_amount);
                    }
                    r => *out.entry(r.clone()).or_default() += 1,
                }
            }
        }
    }
    for ((day, owner, issuer, class, medium), (n, fee)) in clearing {
        out.insert(Row::Clearing { day, owner, issuer, class, medium, n, fee }, 1);
    }
    for ((day, card), (trips, fee, topups, topup_amount)) in usage {
        out.insert(Row::Usage { day, card, trips, fee, topups, topup_amount }, 1);
    }
    // A card's rows depend on how its entries fell into batches; what a lookup reads from
    // them (customer, entries, the last balance) does not.
    for (card, (customer, entries, (_, _, balance))) in cards {
        out.insert(Row::Card { card, customer, entries, last: (0, balance) }, 1);
    }
    out
}

/// Every invariant but determinism; returns what is broken.
pub fn invariants(world: &World, partitions: i32) -> Vec<String> {
    let mut broken = Vec::new();
    let st = world.store.lock().expect("store");
    let b = world.broker.lock().expect("broker");
    // The committed journal.
    let mut committed: BTreeMap<(u16, u64), &gantry_clickhouse::BatchRecord> = BTreeMap::new();
    for r in st.journal.iter().filter(|r| r.is_committed()) {
        if let Some(prev) = committed.insert((r.gantry_partition, r.batch_seq), r) {
            let same = prev.ranges() == r.ranges()
                && (prev.lane_records, prev.settled, prev.account_events)
                    == (r.lane_records, r.settled, r.account_events);
            if !same {
                broken.push(format!(
                    "batch {} of partition {} committed twice with different contents: {:?} and {:?}",
                    r.batch_seq,
                    r.gantry_partition,
                    prev.ranges(),
                    r.ranges()
                ));
            }
        }
    }
    for p in 0..partitions {
        let end = |t: u8| b.logs.get(&(t, p)).map_or(0, |l| l.len() as i64);
        let (mut lane, mut acct, mut seq) = (0, 0, 0);
        for ((q, k), r) in committed.range((p as u16, 0)..=(p as u16, u64::MAX)) {
            debug_assert_eq!(*q, p as u16);
            if *k != seq + 1 || r.lane_from != lane || r.acct_from != acct {
                broken.push(format!(
                    "partition {p}: batch {k} ({:?}) does not continue batch {seq} (ending {lane}/{acct})",
                    r.ranges()
                ));
            }
            (lane, acct, seq) = (r.lane_to, r.acct_to, *k);
        }
        if (lane, acct) != (end(0), end(1)) {
            broken.push(format!(
                "partition {p}: committed batches end at {lane}/{acct}, the logs at {}/{}",
                end(0),
                end(1)
            ));
        }
    }
    // Batches in tables: once each, committed, and no message in two batches.
    let mut source_batch: BTreeMap<(u8, i32, i64), (u16, u64)> = BTreeMap::new();
    for t in TABLES {
        let mut seen: BTreeMap<(u16, u64), u32> = BTreeMap::new();
        for w in st.tables.get(t).into_iter().flatten() {
            *seen.entry((w.partition, w.seq)).or_default() += 1;
            if !committed.contains_key(&(w.partition, w.seq)) {
                broken.push(format!(
                    "{t} holds batch {} of partition {}, which is not committed",
                    w.seq, w.partition
                ));
            }
            for (_, r) in &w.rows {
                let source = match r {
                    Row::Settlement { source, .. }
                    | Row::Ledger { source, .. }
                    | Row::Reject { source, .. }
                    | Row::Duplicate { source, .. }
                    | Row::Status { source, .. } => *source,
                    _ => continue,
                };
                let tag = (w.partition, w.seq);
                if let Some(other) = source_batch.insert(source, tag) {
                    if other != tag {
                        broken.push(format!(
                            "message {source:?} has rows in batches {other:?} and {tag:?}"
                        ));
                    }
                }
            }
        }
        for ((p, k), n) in seen {
            if n > 1 {
                broken.push(format!("{t} holds batch {k} of partition {p} {n} times"));
            }
        }
    }
    broken.extend(ledger_chains(&st));
    broken.extend(rollups(&st));
    broken.extend(status_list(&st, &b));
    broken
}

fn ledger_chains(st: &crate::world::StoreState) -> Vec<String> {
    let mut chains: BTreeMap<&str, Vec<(u64, u32, i64, i64)>> = BTreeMap::new();
    for w in st.tables.get("ledger").into_iter().flatten() {
        for (row, r) in &w.rows {
            if let Row::Ledger { card, amount, balance_after, .. } = r {
                chains.entry(card).or_default().push((w.seq, *row, *amount, *balance_after));
            }
        }
    }
    let mut broken = Vec::new();
    for (card, mut chain) in chains {
        chain.sort();
        let mut balance = 0;
        for (seq, row, amount, after) in chain {
            balance += amount;
            if balance != after {
                broken.push(format!(
                    "card {card}: ledger entry {seq}.{row} says {after}, the chain {balance}"
                ));
                break;
            }
        }
    }
    broken
}

fn rollups(st: &crate::world::StoreState) -> Vec<String> {
    let rows = |t: &str| {
        st.tables.get(t).into_iter().flatten().flat_map(|w| w.rows.iter().map(|(_, r)| r))
    };
    let (mut split_fee, mut splits, mut clearing_fee, mut clearing_n) = (0i64, 0u64, 0i64, 0u64);
    for r in rows("splits") {
        if let Row::Split { fee, .. } = r {
            split_fee += fee;
            splits += 1;
        }
    }
    for r in rows("clearing") {
        if let Row::Clearing { n, fee, .. } = r {
            clearing_fee += fee;
            clearing_n += n;
        }
    }
    let mut broken = Vec::new();
    if (split_fee, splits) != (clearing_fee, clearing_n) {
        broken.push(format!(
            "clearing sums {clearing_n} splits / {clearing_fee} fen, the splits are {splits} / {split_fee}"
        ));
    }
    broken
}

fn status_list(st: &crate::world::StoreState, b: &crate::world::BrokerState) -> Vec<String> {
    // The last status row of each card, in batch order (a card is in one partition).
    let mut last_row: BTreeMap<&str, (u64, usize, bool)> = BTreeMap::new();
    for w in st.tables.get("status").into_iter().flatten() {
        for (i, (_, r)) in w.rows.iter().enumerate() {
            if let Row::Status { card, listed, .. } = r {
                let e = last_row.entry(card).or_insert((0, 0, *listed));
                if (w.seq, i) >= (e.0, e.1) {
                    *e = (w.seq, i, *listed);
                }
            }
        }
    }
    let mut last_message: BTreeMap<&str, bool> = BTreeMap::new();
    for (_, card, json) in &b.status {
        last_message.insert(card, json.contains("\"listed\":true"));
    }
    let mut broken = Vec::new();
    for (card, (_, _, listed)) in last_row {
        match last_message.get(card) {
            Some(m) if *m == listed => {}
            other => broken
                .push(format!("card {card}: status row listed={listed}, last message {other:?}")),
        }
    }
    broken
}

/// How two canonical outputs differ, briefly.
pub fn difference(faulty: &Canonical, reference: &Canonical) -> Option<String> {
    if faulty == reference {
        return None;
    }
    let extra: Vec<_> =
        faulty.iter().filter(|(k, v)| reference.get(*k) != Some(v)).take(3).collect();
    let missing: Vec<_> =
        reference.iter().filter(|(k, v)| faulty.get(*k) != Some(v)).take(3).collect();
    Some(format!(
        "output differs from the crash-free run: {} rows vs {}; e.g. here {extra:?}, there {missing:?}",
        faulty.values().sum::<u64>(),
        reference.values().sum::<u64>()
    ))
}
