//! The per-partition engine end to end on known records: exact rows, balances, status-list
//! changes, duplicates and rejects, and determinism across a state checkpoint.

use std::path::Path;

use gantry_core::output::{Batch, EntryKind, Source, Topic};
use gantry_core::tariff::{TariffSet, TariffStore};
use gantry_core::{Engine, EngineConfig};

fn tariffs() -> TariffSet {
    TariffStore::load_root(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tariffs"),
        480,
    )
    .unwrap()
}

const TS: i64 = 1_794_369_600_000; // 2026-11-11T12:00 +08:00, after every record but T7

fn src(topic: Topic, offset: i64) -> Source {
    Source { topic, partition: 0, offset, timestamp_ms: Some(TS) }
}

fn lane(id: &str, card: &str, units: &str, time: &str, vtype: u8) -> String {
    format!(
        r#"{{"tradeId":"{id}","gantryId":"G1","tollIntervalId":"{units}","transTime":"{time}","mediaType":1,"cpuCardId":"{card}","vehicleType":{vtype},"vehiclePlate":"苏A1_0"}}"#
    )
}

const CARD: &str = "32011820220000123456";

fn events() -> Vec<(Topic, String)> {
    vec![
        (Topic::AccountEvents, format!(r#"{{"type":"open","cardId":"{CARD}","time":"2026-11-01T08:00:00","customerId":"CU1","cardType":22,"vehicleType":1,"balance":1000}}"#)),
        (Topic::LaneTx, lane("T1", CARD, "G0015320030010|G0015320030020", "2026-11-10T12:00:00", 1)), // 974 → 26
        (Topic::LaneTx, lane("T1", CARD, "G0015320030010|G0015320030020", "2026-11-10T12:00:00", 1)), // duplicate
        (Topic::LaneTx, lane("T2", CARD, "G0015320030010", "2026-11-10T12:05:00", 1)),                 // 589 → −563, listed
        (Topic::LaneTx, lane("T3", "32019999999999999999", "G0015320030010", "2026-11-10T12:06:00", 1)), // unknown card
        (Topic::LaneTx, lane("T4", CARD, "G9", "2026-11-10T12:07:00", 1)),                              // unknown unit
        (Topic::LaneTx, "{\"tradeId\":\"T5\"".to_string()),                                                // not JSON
        (Topic::AccountEvents, format!(r#"{{"type":"topup","cardId":"{CARD}","time":"2026-11-10T13:00:00","topupId":"TU1","amount":10000}}"#)),
        (Topic::AccountEvents, format!(r#"{{"type":"topup","cardId":"{CARD}","time":"2026-11-10T13:00:00","topupId":"TU1","amount":10000}}"#)),
        (Topic::AccountEvents, r#"{"type":"topup","cardId":"1","time":"2026-11-10T13:00:00","topupId":"TU2","amount":5}"#.to_string()),
        (Topic::AccountEvents, format!(r#"{{"type":"status","cardId":"{CARD}","time":"2026-11-10T14:00:00","status":"lost"}}"#)),
        (Topic::LaneTx, lane("T6", CARD, "G0015320030010", "2026-11-10T14:30:00", 1)), // lost card still debited
        (Topic::AccountEvents, format!(r#"{{"type":"adjust","cardId":"{CARD}","time":"2026-11-10T15:00:00","adjustId":"AD1","amount":589,"reason":"dispute","tradeId":"T6"}}"#)),
        (Topic::LaneTx, lane("T7", CARD, "G0015320030010", "2026-11-12T12:00:00", 1)), // in the future of TS by > 1 h
    ]
}

fn run(engine: &mut Engine, set: &TariffSet, evs: &[(Topic, String)], out: &mut Batch) {
    for (i, (topic, msg)) in evs.iter().enumerate() {
        let s = src(*topic, i as i64);
        match topic {
            Topic::LaneTx => engine.lane_message(set, msg.as_bytes(), s, out),
            Topic::AccountEvents => engine.account_message(msg.as_bytes(), s, out),
        }
    }
}

#[test]
fn known_records_give_exact_rows() {
    let set = tariffs();
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Batch::new();
    run(&mut engine, &set, &events(), &mut out);

    let settled: Vec<_> = out
        .settlements
        .iter()
        .map(|s| (out.text(s.trade_id), s.fee, s.balance_after, s.flags))
        .collect();
    // T1: 974 (multi-unit). T2: 589, leaves −563 (arrears). T6: 589 on a lost, listed card.
    use gantry_core::pricing::flags::*;
    assert_eq!(
        settled,
        vec![
            ("T1", 974, 26, MULTI_UNIT),
            ("T2", 589, -563, ARREARS),
            ("T6", 589, 10000 - 563 - 589, CARD_LISTED)
        ]
    );
    let s = &out.settlements[0];
    assert_eq!(
        (out.text(s.card_id), out.text(s.issuer_id), out.text(s.customer_id)),
        (CARD, "3201", "CU1")
    );
    assert_eq!(
        (s.pay_fee, s.discount_fee, out.text(s.tariff_version)),
        (1025, 51, "32-20261101-001")
    );
    assert_eq!(gantry_core::time::format_date(s.trade_day as i64), "2026-11-10");

    let splits: Vec<_> = out
        .splits
        .iter()
        .map(|s| (out.text(s.trade_id), out.text(s.interval_id), out.text(s.owner_id), s.fee))
        .collect();
    assert_eq!(
        splits,
        vec![
            ("T1", "G0015320030010", "OP-3201-01", 589),
            ("T1", "G0015320030020", "OP-3201-02", 385),
            ("T2", "G0015320030010", "OP-3201-01", 589),
            ("T6", "G0015320030010", "OP-3201-01", 589)
        ]
    );

    let ledger: Vec<_> = out
        .ledger
        .iter()
        .map(|l| (l.kind, out.text(l.entry_id), l.amount, l.balance_after))
        .collect();
    assert_eq!(
        ledger,
        vec![
            (EntryKind::Open, CARD, 1000, 1000),
            (EntryKind::Debit, "T1", -974, 26),
            (EntryKind::Debit, "T2", -589, -563),
            (EntryKind::Topup, "TU1", 10000, 9437),
            (EntryKind::Debit, "T6", -589, 8848),
            (EntryKind::Adjust, "AD1", 589, 9437),
        ]
    );

    let status: Vec<_> =
        out.status.iter().map(|s| (s.listed, s.reason.code(), s.source.offset)).collect();
    assert_eq!(
        status,
        vec![
            (true, "insufficient_balance", 3),
            (false, "insufficient_balance", 7),
            (true, "lost", 10)
        ]
    );

    let dups: Vec<_> = out.duplicates.iter().map(|d| (out.text(d.id), d.kind)).collect();
    assert_eq!(dups, vec![("T1", "trade"), ("TU1", "topup")]);

    let rejects: Vec<_> = out
        .rejects
        .iter()
        .map(|r| (r.reason, out.text(r.detail).to_string(), r.source.offset))
        .collect();
    assert_eq!(rejects[0].0, "unknown_card");
    assert!(
        rejects[0].1.contains(r#""fee":589"#) && rejects[0].1.contains("32019999999999999999"),
        "priced for recovery: {}",
        rejects[0].1
    );
    assert_eq!(
        &rejects[1..],
        &[
            ("unknown_interval", "G9".to_string(), 5),
            ("not_json", "at byte 15".to_string(), 6),
            ("unknown_card", String::new(), 9),
            ("time_in_future", String::new(), 13),
        ]
    );
    assert_eq!(out.raw(out.rejects[2].raw), b"{\"tradeId\":\"T5\"");

    let c = out.counts;
    assert_eq!((c.lane_records, c.settled, c.lane_rejected, c.lane_duplicates), (8, 3, 4, 1));
    assert_eq!(c.lane_records, c.settled + c.lane_rejected + c.lane_duplicates);
    assert_eq!(
        (c.account_events, c.events_applied, c.events_rejected, c.events_duplicates),
        (6, 4, 1, 1)
    );
    let acc = engine.card(gantry_core::record::CardId::parse(CARD).unwrap()).unwrap();
    assert_eq!(acc.balance, 9437);
}

#[test]
fn a_checkpoint_and_replay_decide_the_same() {
    let set = tariffs();
    let evs = events();
    let (head, tail) = evs.split_at(5);

    let mut straight = Engine::new(EngineConfig::default());
    let mut all = Batch::new();
    run(&mut straight, &set, &evs, &mut all);

    let mut first = Engine::new(EngineConfig::default());
    let mut out = Batch::new();
    run(&mut first, &set, head, &mut out);
    let mut state = Vec::new();
    first.write_state(&mut state);
    let mut resumed = Engine::read_state(EngineConfig::default(), &state).unwrap();
    let mut rest = Batch::new();
    // Offsets continue where the head stopped.
    for (i, (topic, msg)) in tail.iter().enumerate() {
        let s = src(*topic, (i + head.len()) as i64);
        match topic {
            Topic::LaneTx => resumed.lane_message(&set, msg.as_bytes(), s, &mut rest),
            Topic::AccountEvents => resumed.account_message(msg.as_bytes(), s, &mut rest),
        }
    }
    let fees = |b: &Batch| {
        b.settlements
            .iter()
            .map(|s| (b.text(s.trade_id).to_string(), s.fee, s.balance_after))
            .collect::<Vec<_>>()
    };
    let mut joined = fees(&out);
    joined.extend(fees(&rest));
    assert_eq!(joined, fees(&all));
    assert_eq!(out.ledger.len() + rest.ledger.len(), all.ledger.len());
    assert_eq!(out.status.len() + rest.status.len(), all.status.len());
    let mut s2 = Vec::new();
    resumed.write_state(&mut s2);
    let mut s1 = Vec::new();
    straight.write_state(&mut s1);
    assert_eq!(s1.len(), s2.len());
    assert!(Engine::read_state(EngineConfig::default(), &state[..state.len() - 1]).is_err());
}

#[test]
fn cpc_records_are_settled_never_debited() {
    let set = tariffs();
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Batch::new();
    let msg = r#"{"tradeId":"C1","gantryId":"G1","tollIntervalId":"G0015320030010","transTime":"2026-11-10T12:00:00","mediaType":2,"obuId":"CPC-1","vehicleType":2}
{"tradeId":"C2","gantryId":"G1","tollIntervalId":"G0015320030010","transTime":"2026-11-10T12:00:00","mediaType":2,"obuId":"CPC-2","vehicleType":1,"vehicleClass":21}"#;
    engine.lane_message(&set, msg.as_bytes(), src(Topic::LaneTx, 0), &mut out);
    let rows: Vec<_> = out
        .settlements
        .iter()
        .map(|s| (out.text(s.trade_id), s.fee, out.text(s.card_id), s.media_type))
        .collect();
    assert_eq!(rows, vec![("C1", 930, "", 2), ("C2", 0, "", 2)]);
    assert!(out.ledger.is_empty());
    assert_eq!(out.counts.messages, 1);
}

/// An unknown card's reject carries its price as JSON for recovery (追缴); a tariff version
/// whose name has quotes and a backslash must still give valid JSON.
#[test]
fn unknown_card_detail_is_valid_json_whatever_the_version_name() {
    let toml_text = "version = \"32-\\\"odd\\\"\\\\-001\"\neffective_from = \"2026-11-01T00:00:00+08:00\"\netc_discount_bp = 500\n";
    let csv = "interval_id,owner_id,length_m,fee_1\nG0015320030010,OP1,1000,620\n";
    let v = gantry_core::tariff::TariffVersion::from_sources(
        Path::new("v/tariff.toml"),
        toml_text,
        Path::new("v/intervals.csv"),
        csv,
        480,
    )
    .unwrap();
    assert_eq!(&*v.version, "32-\"odd\"\\-001");
    let set = TariffSet::default().with(v).unwrap();
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Batch::new();
    let msg = lane("T1", "32019999999999999999", "G0015320030010", "2026-11-10T12:00:00", 1);
    engine.lane_message(&set, msg.as_bytes(), src(Topic::LaneTx, 0), &mut out);
    assert_eq!(out.rejects.len(), 1);
    let detail: serde_json::Value =
        serde_json::from_str(out.text(out.rejects[0].detail)).expect("valid JSON");
    assert_eq!(
        detail,
        serde_json::json!({
            "cardId": "32019999999999999999",
            "payFee": 620,
            "discountFee": 31,
            "fee": 589,
            "tariffVersion": "32-\"odd\"\\-001",
        })
    );
}

/// The future check takes the earlier of the Kafka timestamp and the batch's clock: a record
/// stamped a year ahead in Kafka is still rejected against the clock; with no clock (batches
/// journaled before it existed) only the Kafka timestamp bounds it; with neither, nothing.
#[test]
fn the_future_is_bounded_by_the_batch_clock_too() {
    let set = tariffs();
    let year_ms = 365 * 86_400_000;
    let record = lane("F1", CARD, "G0015320030010", "2027-11-10T12:00:00", 1);
    let cpc =
        record.replace(r#""mediaType":1,"cpuCardId":"32011820220000123456""#, r#""mediaType":2"#);
    let cases = [
        // (Kafka timestamp, batch clock) → rejected time_in_future?
        (Some(TS + year_ms), gantry_core::engine::NO_CLOCK_MS, false),
        (Some(TS + year_ms), TS, true),
        (Some(TS), TS + year_ms, true),
        (None, TS, true),
        (None, gantry_core::engine::NO_CLOCK_MS, false),
    ];
    for (i, (kafka_ts, clock, rejected)) in cases.into_iter().enumerate() {
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_clock_ms(clock);
        let mut out = Batch::new();
        let src = Source { timestamp_ms: kafka_ts, ..src(Topic::LaneTx, 0) };
        engine.lane_message(&set, cpc.as_bytes(), src, &mut out);
        let in_future = out.rejects.iter().any(|r| r.reason == "time_in_future");
        assert_eq!(in_future, rejected, "case {i}");
        assert_eq!(out.settlements.len(), usize::from(!rejected), "case {i}");
    }
}

/// Records older than the dedup window are parked, not rejected, and decided after the rest
/// of the batch by the answers of the lookup of what is already settled: one settled before
/// is a duplicate, and so is a second copy of one settled now; any other is settled and
/// debited then, after the batch's other ledger entries (its `batch_row`s come last). Under
/// `LatePolicy::Reject` (batches journaled before the lookup existed) they are rejected.
#[test]
fn late_records_are_parked_then_decided_by_the_lookup() {
    use gantry_core::engine::LatePolicy;
    let set = tariffs();
    let open = format!(
        r#"{{"type":"open","cardId":"{CARD}","time":"2026-11-01T08:00:00","customerId":"CU1","cardType":22,"vehicleType":1,"balance":1000}}"#
    );
    let now = lane("N1", CARD, "G0015320030010", "2026-11-10T12:00:00", 1);
    // Two copies of L1 in one message (each record's own bytes are parked), then L2.
    let l1 = lane("L1", CARD, "G0015320030010", "2026-11-02T12:00:00", 1);
    let late = format!("{l1}\n{l1}");
    let l2 = lane("L2", CARD, "G0015320030010", "2026-11-01T12:00:00", 1);
    type Case<'a> = (LatePolicy, &'a [bool], &'a [&'a str], &'a [&'a str], u64);
    let cases: [Case; 3] = [
        // (policy, settled before per parked record) → settled, duplicates, rejected
        (LatePolicy::Park, &[false, false, false], &["N1", "L1", "L2"], &["L1"], 0),
        (LatePolicy::Park, &[true, true, false], &["N1", "L2"], &["L1", "L1"], 0),
        (LatePolicy::Reject, &[], &["N1"], &[], 3),
    ];
    // A record settled in the window, then — the window having moved past it within the
    // same batch — its copy: parked, and a duplicate although the lookup (which cannot see
    // this batch) says "not settled".
    {
        let mut engine = Engine::new(EngineConfig::default());
        let mut out = Batch::new();
        engine.account_message(open.as_bytes(), src(Topic::AccountEvents, 0), &mut out);
        let early = lane("E1", CARD, "G0015320030010", "2026-11-02T12:00:00", 1);
        for (offset, msg) in [&early, &now, &early].into_iter().enumerate() {
            engine.lane_message(&set, msg.as_bytes(), src(Topic::LaneTx, offset as i64), &mut out);
        }
        assert_eq!(out.late.len(), 1, "the copy is parked");
        engine.settle_late(&set, &[false], &mut out);
        let settled: Vec<&str> = out.settlements.iter().map(|s| out.text(s.trade_id)).collect();
        assert_eq!(settled, ["E1", "N1"]);
        assert_eq!(out.duplicates.len(), 1);
    }
    for (i, (policy, before, settled, dups, rejected)) in cases.into_iter().enumerate() {
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_late_policy(policy);
        let mut out = Batch::new();
        engine.account_message(open.as_bytes(), src(Topic::AccountEvents, 0), &mut out);
        for (offset, msg) in [&now, &late, &l2].into_iter().enumerate() {
            engine.lane_message(&set, msg.as_bytes(), src(Topic::LaneTx, offset as i64), &mut out);
        }
        let parked: Vec<&str> = out.late.iter().map(|r| out.text(r.trade_id)).collect();
        let expect_parked: &[&str] =
            if policy == LatePolicy::Park { &["L1", "L1", "L2"] } else { &[] };
        assert_eq!(parked, expect_parked, "case {i}");
        assert_eq!(out.counts.lane_late, expect_parked.len() as u64, "case {i}");
        engine.settle_late(&set, before, &mut out);
        let ids = |v: Vec<gantry_core::output::Text>| -> Vec<String> {
            v.into_iter().map(|t| out.text(t).to_string()).collect()
        };
        assert_eq!(ids(out.settlements.iter().map(|s| s.trade_id).collect()), settled, "case {i}");
        assert_eq!(ids(out.duplicates.iter().map(|d| d.id).collect()), dups, "case {i}");
        assert_eq!(out.rejects.len() as u64, rejected, "case {i}");
        let c = out.counts;
        assert_eq!(c.lane_records, 4, "case {i}");
        assert_eq!(c.lane_records, c.settled + c.lane_rejected + c.lane_duplicates, "case {i}");
        // The ledger is a chain in `batch_row` order: opening balance, then each debit.
        let mut balance = 0;
        for (row, l) in out.ledger.iter().enumerate() {
            assert_eq!(l.batch_row as usize, row, "case {i}");
            balance += l.amount;
            assert_eq!(l.balance_after, balance, "case {i}");
        }
        assert_eq!(
            engine.card(gantry_core::record::CardId::parse(CARD).unwrap()).unwrap().balance,
            balance
        );
        assert_eq!(out.ledger.len(), 1 + settled.len(), "case {i}");
    }
}
