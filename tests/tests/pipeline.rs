//! The running engine against the real broker and the real ClickHouse: known records in,
//! exact rows out; and a second run that must replay the journal and continue exactly once.

#![forbid(unsafe_code)]

use gantry_core::time::parse_timestamp_ms;
use gantry_gen::{Network, Topic, Traffic, TrafficConfig};
use gantry_tests::{fixture_tariffs, Env};

const CARD: &str = "32011820220000123456";
const CARD2: &str = "32020000000000000777";

fn ts(t: &str) -> i64 {
    parse_timestamp_ms(t, 480).unwrap() + 1_000
}

fn lane(id: &str, card: &str, units: &str, time: &str, vtype: u8) -> String {
    format!(
        r#"{{"tradeId":"{id}","gantryId":"G1","tollIntervalId":"{units}","transTime":"{time}","mediaType":1,"cpuCardId":"{card}","vehicleType":{vtype}}}"#
    )
}

#[test]
fn known_records_give_exact_rows_in_every_table() {
    let env = Env::new("known", 2);
    let open = |card: &str, customer: &str, ty: u8, balance: i64, credit: i64| {
        format!(
            r#"{{"type":"open","cardId":"{card}","time":"2026-11-01T08:00:00","customerId":"{customer}","cardType":{ty},"vehicleType":1,"balance":{balance},"creditLimit":{credit}}}"#
        )
    };
    env.produce_account(CARD, &open(CARD, "CU1", 22, 1000, 0), ts("2026-11-01T08:00:00"));
    env.produce_account(CARD2, &open(CARD2, "CU2", 23, 0, 500), ts("2026-11-01T08:00:00"));
    env.flush();
    // Lane records (the account events above have older timestamps, so merge puts them first).
    let u12 = "G0015320030010|G0015320030020";
    env.produce_lane(
        CARD,
        &lane("T1", CARD, u12, "2026-11-10T12:00:00", 1),
        ts("2026-11-10T12:00:00"),
    ); // 974 → 26
    env.produce_lane(
        CARD,
        &lane("T1", CARD, u12, "2026-11-10T12:00:00", 1),
        ts("2026-11-10T12:00:30"),
    ); // duplicate
    env.produce_lane(
        CARD,
        &lane("T2", CARD, "G0015320030010", "2026-11-10T12:05:00", 1),
        ts("2026-11-10T12:05:00"),
    ); // → −563, listed
    env.produce_lane(
        CARD2,
        &lane("T3", CARD2, "G0015320030010", "2026-11-10T12:06:00", 1),
        ts("2026-11-10T12:06:00"),
    ); // postpaid → −589, overdrawn
    env.produce_lane(
        "3201999",
        &lane("T4", "32019999999999999999", "G0015320030010", "2026-11-10T12:07:00", 1),
        ts("2026-11-10T12:07:00"),
    );
    env.produce_lane(
        CARD,
        &lane("T5", CARD, "G9", "2026-11-10T12:08:00", 1),
        ts("2026-11-10T12:08:00"),
    );
    env.produce(
        &env.cfg.lane_topic.clone(),
        CARD,
        b"{\"tradeId\":\"T6\"",
        ts("2026-11-10T12:09:00"),
    );
    env.produce_lane("cpc", r#"{"tradeId":"C1","gantryId":"G1","tollIntervalId":"G0015320030010","transTime":"2026-11-10T12:10:00","mediaType":2,"obuId":"CPC1","vehicleType":2}"#, ts("2026-11-10T12:10:00"));
    env.flush();
    env.produce_account(CARD, &format!(r#"{{"type":"topup","cardId":"{CARD}","time":"2026-11-10T13:00:00","topupId":"TU1","amount":10000}}"#), ts("2026-11-10T13:00:00"));
    env.produce_account(CARD, &format!(r#"{{"type":"topup","cardId":"{CARD}","time":"2026-11-10T13:00:00","topupId":"TU1","amount":10000}}"#), ts("2026-11-10T13:00:05"));
    env.produce_account(
        CARD,
        &format!(
            r#"{{"type":"status","cardId":"{CARD}","time":"2026-11-10T14:00:00","status":"lost"}}"#
        ),
        ts("2026-11-10T14:00:00"),
    );
    env.produce_lane(
        CARD,
        &lane("T7", CARD, "G0015320030010", "2026-11-10T14:30:00", 1),
        ts("2026-11-10T14:30:00"),
    ); // lost card: still debited
    env.run(&env.cfg, &fixture_tariffs());

    /// trade id, pay/discount/fee, balance after, flags, card, issuer, customer, media type
    type SettledRow = (String, String, i64, u32, String, String, String, u8);
    let settled: Vec<SettledRow> = env.query(
        "SELECT trade_id, concat(toString(pay_fee), '/', toString(discount_fee), '/', toString(fee)), balance_after, flags, card_id, issuer_id, customer_id, media_type FROM settlements ORDER BY trade_id",
    );
    let s = |id: &str,
             pay: i64,
             disc: i64,
             fee: i64,
             bal: i64,
             flags: u32,
             card: &str,
             issuer: &str,
             cu: &str,
             media: u8| {
        (
            id.to_string(),
            format!("{pay}/{disc}/{fee}"),
            bal,
            flags,
            card.to_string(),
            issuer.to_string(),
            cu.to_string(),
            media,
        )
    };
    assert_eq!(
        settled,
        vec![
            s("C1", 930, 0, 930, 0, 0, "", "", "", 2),
            s("T1", 1025, 51, 974, 26, 16, CARD, "3201", "CU1", 1),
            s("T2", 620, 31, 589, -563, 128, CARD, "3201", "CU1", 1),
            s("T3", 620, 31, 589, -589, 128, CARD2, "3202", "CU2", 1),
            s("T7", 620, 31, 589, 10000 - 563 - 589, 64, CARD, "3201", "CU1", 1),
        ]
    );
    let splits: Vec<(String, String, String, i64, i64)> = env.query("SELECT trade_id, interval_id, owner_id, pay_fee, fee FROM settlement_splits ORDER BY trade_id, interval_id");
    assert_eq!(splits.len(), 6);
    assert_eq!(splits[1], ("T1".into(), "G0015320030010".into(), "OP-3201-01".into(), 620, 589));
    assert_eq!(splits[2], ("T1".into(), "G0015320030020".into(), "OP-3201-02".into(), 405, 385));

    let ledger: Vec<(String, String, String, i64, i64)> = env.query("SELECT card_id, kind, entry_id, amount, balance_after FROM ledger ORDER BY card_id, time, kind");
    let l = |c: &str, k: &str, e: &str, a: i64, b: i64| {
        (c.to_string(), k.to_string(), e.to_string(), a, b)
    };
    assert_eq!(
        ledger,
        vec![
            l(CARD, "open", CARD, 1000, 1000),
            l(CARD, "debit", "T1", -974, 26),
            l(CARD, "debit", "T2", -589, -563),
            l(CARD, "topup", "TU1", 10000, 9437),
            l(CARD, "debit", "T7", -589, 8848),
            l(CARD2, "open", CARD2, 0, 0),
            l(CARD2, "debit", "T3", -589, -589),
        ]
    );
    let rejects: Vec<(String, String)> =
        env.query("SELECT reason, detail FROM rejects ORDER BY reason");
    assert_eq!(
        rejects.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["not_json", "unknown_card", "unknown_interval"]
    );
    assert!(rejects[1].1.contains(r#""fee":589"#), "{}", rejects[1].1);
    assert_eq!(rejects[2].1, "G9");
    let raw: Vec<String> = env.query("SELECT raw FROM rejects WHERE reason = 'not_json'");
    assert_eq!(raw[0], "{\"tradeId\":\"T6\"");
    let dups: Vec<(String, String)> =
        env.query("SELECT trade_id, kind FROM duplicates ORDER BY trade_id");
    assert_eq!(dups, vec![("T1".into(), "trade".into()), ("TU1".into(), "topup".into())]);
    let status: Vec<(String, u8, String)> = env.query(
        "SELECT card_id, listed, reason FROM status_list ORDER BY card_id, time, listed DESC",
    );
    assert_eq!(
        status,
        vec![
            (CARD.into(), 1, "insufficient_balance".into()),
            (CARD.into(), 0, "insufficient_balance".into()),
            (CARD.into(), 1, "lost".into()),
            (CARD2.into(), 1, "overdrawn".into()),
        ]
    );
    let mut msgs = env.status_messages();
    msgs.sort();
    assert_eq!(msgs.len(), 4);
    assert!(
        msgs.iter().any(|(k, v)| k == CARD2
            && v.contains(r#""listed":true"#)
            && v.contains("overdrawn")
            && v.contains("2026-11-10T12:06:00+08:00")),
        "{msgs:?}"
    );

    let clearing: Vec<(String, String, u64, i64)> = env.query("SELECT owner_id, issuer_id, sum(n), sum(fee) FROM clearing_daily GROUP BY owner_id, issuer_id ORDER BY owner_id, issuer_id");
    assert_eq!(
        clearing,
        vec![
            ("OP-3201-01".into(), "".into(), 1, 930),
            ("OP-3201-01".into(), "3201".into(), 3, 589 * 3),
            ("OP-3201-01".into(), "3202".into(), 1, 589),
            ("OP-3201-02".into(), "3201".into(), 1, 385),
        ]
    );
    let usage: Vec<(String, String, u64, i64, u64, i64)> =
        env.query("SELECT customer_id, card_id, sum(trips), sum(fee), sum(topups), sum(topup_amount) FROM customer_usage_daily GROUP BY customer_id, card_id ORDER BY customer_id");
    assert_eq!(
        usage,
        vec![
            ("CU1".into(), CARD.into(), 3, 974 + 589 + 589, 1, 10000),
            ("CU2".into(), CARD2.into(), 1, 589, 0, 0)
        ]
    );

    // Reconciliation: every lane record is settled, rejected or a duplicate.
    let recon: Vec<(u64, u64)> = env.query("SELECT sum(lane_records), sum(settled + lane_rejected + lane_duplicates) FROM gantry_batches WHERE phase = 'committed'");
    assert_eq!(recon, vec![(9, 9)]);
}

#[test]
fn a_second_run_replays_the_journal_and_continues_exactly_once() {
    // No checkpoint in the first run: the second run must rebuild every partition's state
    // by replaying the whole journal before it goes on.
    second_run_continues_exactly_once("replay", 1_000);
}

#[test]
fn a_second_run_resumes_from_a_checkpoint_and_continues_exactly_once() {
    // Checkpoints every 3 batches, taken while the next batch is already being processed:
    // the second run restores the newest one and replays only the batches after it.
    second_run_continues_exactly_once("checkpoint", 3);
}

fn second_run_continues_exactly_once(name: &str, checkpoint_every_batches: u64) {
    let env = Env::new(name, 3);
    let net = Network::new(5, 200, 8);
    let tariff_dir = std::env::temp_dir().join(format!("gantry-test-tariff-{}", env.cfg.database));
    net.write_tariff_dir(&tariff_dir).unwrap();
    let mut traffic = Traffic::new(
        TrafficConfig { records: 6_000, cards: 800, seed: 9, ..TrafficConfig::default() },
        &net,
    );
    let mut sent = 0;
    let mut half_done = false;
    // Many small batches in the first run.
    let first = gantry_pipeline::PipelineConfig {
        batch_rows_max: 500,
        checkpoint_every_batches,
        ..env.cfg.clone()
    };
    while let Some(m) = traffic.next_message() {
        let topic = if m.topic == Topic::LaneTx {
            env.cfg.lane_topic.clone()
        } else {
            env.cfg.account_topic.clone()
        };
        env.produce(&topic, std::str::from_utf8(m.key).unwrap(), m.value, m.timestamp_ms);
        sent += 1;
        if sent == 4_000 && !half_done {
            half_done = true;
            env.run(&first, &tariff_dir);
        }
    }
    let tally = traffic.tally;
    let batches_before: Vec<u64> =
        env.query("SELECT count() FROM gantry_batches WHERE phase = 'committed'");
    assert!(batches_before[0] > 3, "the first run wrote several batches");
    // A stop checkpoints every partition after its last batch (nothing to replay then);
    // dropped here, so the second run replays the journal as after a crash.
    env.exec(&format!(
        "ALTER TABLE gantry_checkpoints DELETE WHERE batch_seq % {checkpoint_every_batches} != 0"
    ));
    wait_for_mutations(&env);
    let checkpoints: Vec<u64> = env.query("SELECT count() FROM gantry_checkpoints");
    if checkpoint_every_batches <= 3 {
        assert!(checkpoints[0] > 0, "the first run wrote checkpoints");
    } else {
        assert_eq!(checkpoints[0], 0, "the first run wrote no checkpoint");
    }
    env.run(&env.cfg, &tariff_dir);

    env.assert_settled_exactly_once(&tally);
    let _ = std::fs::remove_dir_all(tariff_dir);
}

/// A batch that was planned and only partly written when the engine stopped (here: its rows
/// taken out of two tables and its commit record removed, as a crash between INSERTs would
/// leave it) is completed by the next run: the missing tables get the batch's rows, the
/// tables that had them are left alone, and the batch is committed. Nothing doubles.
#[test]
fn a_planned_batch_is_completed_with_only_its_missing_rows() {
    let env = Env::new("complete", 3);
    let net = Network::new(5, 200, 8);
    let tariff_dir = std::env::temp_dir().join(format!("gantry-test-tariff-{}", env.cfg.database));
    net.write_tariff_dir(&tariff_dir).unwrap();
    let mut traffic = Traffic::new(
        TrafficConfig { records: 3_000, cards: 500, seed: 11, ..TrafficConfig::default() },
        &net,
    );
    while let Some(m) = traffic.next_message() {
        let topic = if m.topic == Topic::LaneTx {
            env.cfg.lane_topic.clone()
        } else {
            env.cfg.account_topic.clone()
        };
        env.produce(&topic, std::str::from_utf8(m.key).unwrap(), m.value, m.timestamp_ms);
    }
    // Small batches, no checkpoints: the second run replays the journal up to the broken batch.
    let cfg = gantry_pipeline::PipelineConfig {
        batch_rows_max: 400,
        checkpoint_every_batches: 1_000,
        ..env.cfg.clone()
    };
    env.run(&cfg, &tariff_dir);
    let totals = || -> (u64, u64, u64, u64) {
        let s: Vec<(u64, u64)> = env.query("SELECT count(), uniqExact(trade_id) FROM settlements");
        let sp: Vec<u64> = env.query("SELECT count() FROM settlement_splits");
        let l: Vec<u64> = env.query("SELECT count() FROM ledger");
        (s[0].0, s[0].1, sp[0], l[0])
    };
    let before = totals();
    assert_eq!(before.0, before.1);

    // The newest batch of a partition that wrote settlements, splits and ledger rows.
    let newest: Vec<(u16, u64)> = env.query("SELECT gantry_partition, max(batch_seq) FROM gantry_batches GROUP BY gantry_partition ORDER BY gantry_partition");
    let rows_of = |table: &str, p: u16, seq: u64| -> u64 {
        env.query::<u64>(&format!(
            "SELECT count() FROM {table} WHERE gantry_partition = {p} AND batch_seq = {seq}"
        ))[0]
    };
    let (p, seq, settled, splits, ledger) = newest
        .iter()
        .map(|&(p, seq)| {
            (
                p,
                seq,
                rows_of("settlements", p, seq),
                rows_of("settlement_splits", p, seq),
                rows_of("ledger", p, seq),
            )
        })
        .find(|b| b.2 > 0 && b.3 > 0 && b.4 > 0)
        .expect("a newest batch with rows in the three tables");
    for sql in [
        format!("ALTER TABLE settlements DELETE WHERE gantry_partition = {p} AND batch_seq = {seq}"),
        format!("ALTER TABLE ledger DELETE WHERE gantry_partition = {p} AND batch_seq = {seq}"),
        format!("ALTER TABLE gantry_batches DELETE WHERE gantry_partition = {p} AND batch_seq = {seq} AND phase = 'committed'"),
        // A crash inside the landing leaves no checkpoint of the batch (it is written only
        // after the commit): drop the one the run's stop wrote.
        format!("ALTER TABLE gantry_checkpoints DELETE WHERE gantry_partition = {p} AND batch_seq >= {seq}"),
    ] {
        env.exec(&sql);
    }
    wait_for_mutations(&env);
    let broken = totals();
    assert_eq!(
        (broken.0, broken.2, broken.3),
        (before.0 - settled, before.2, before.3 - ledger),
        "the batch is gone from two tables only"
    );

    env.run(&cfg, &tariff_dir);
    assert_eq!(totals(), before, "the batch's missing rows are back, and nothing doubled");
    assert_eq!(
        rows_of("settlement_splits", p, seq),
        splits,
        "the table that had the batch was not written again"
    );
    let committed: Vec<u64> = env.query(&format!("SELECT count() FROM gantry_batches WHERE gantry_partition = {p} AND batch_seq = {seq} AND phase = 'committed'"));
    assert_eq!(committed[0], 1, "the batch is committed again");
    let _ = std::fs::remove_dir_all(tariff_dir);
}

/// Waits until every mutation (`ALTER … DELETE`) of the test's database is done.
fn wait_for_mutations(env: &Env) {
    for _ in 0..600 {
        let pending: Vec<u64> = env.query(&format!(
            "SELECT count() FROM system.mutations WHERE database = '{}' AND is_done = 0",
            env.cfg.database
        ));
        if pending[0] == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("mutations did not finish");
}
