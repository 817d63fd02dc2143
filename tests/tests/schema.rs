//! `gantry schema apply` over a database of an earlier release: tables whose engine changed
//! are rebuilt, keeping what recovery needs, and applying again changes nothing.

#![forbid(unsafe_code)]

use gantry_clickhouse::CheckpointRecord;
use gantry_tests::Env;

/// A checkpoint table of the first release (a MergeTree keeping every checkpoint) is rebuilt
/// as a ReplacingMergeTree holding each partition's newest checkpoint, which recovery then
/// reads; a second apply leaves it as it is. The newest checkpoint is read by its key alone
/// (`force_primary_key` would refuse a scan).
#[test]
fn an_old_checkpoint_table_is_rebuilt_keeping_each_partitions_newest() {
    let env = Env::new("schema_rebuild", 1);
    env.exec("DROP TABLE gantry_checkpoints");
    env.exec(
        "CREATE TABLE gantry_checkpoints (gantry_partition UInt16, batch_seq UInt64, lane_next Int64, acct_next Int64, state String, written_at DateTime) ENGINE = MergeTree() ORDER BY (gantry_partition, batch_seq)",
    );
    env.exec(
        "INSERT INTO gantry_checkpoints VALUES (0, 4, 40, 4, 'p0-4', now()), (0, 9, 90, 9, 'p0-9', now()), (1, 3, 30, 3, 'p1-3', now()), (0, 7, 70, 7, 'p0-7', now())",
    );
    for _ in 0..2 {
        env.apply_schema();
        let engine: Vec<String> = env.query(&format!(
            "SELECT engine FROM system.tables WHERE database = '{}' AND name LIKE 'gantry_checkpoints%'",
            env.cfg.database
        ));
        assert_eq!(engine, ["ReplacingMergeTree"], "rebuilt, and the legacy table dropped");
        let rows: Vec<(u16, u64)> = env.query(
            "SELECT gantry_partition, batch_seq FROM gantry_checkpoints ORDER BY gantry_partition",
        );
        assert_eq!(rows, [(0, 9), (1, 3)], "each partition's newest, once");
    }
    let newest = |p: u16| -> Option<CheckpointRecord> {
        env.block_on(env.store.latest_checkpoint(p)).unwrap()
    };
    let c = newest(0).expect("partition 0 has one");
    assert_eq!((c.batch_seq, c.lane_next, c.state.as_slice()), (9, 90, b"p0-9".as_slice()));
    // A newer checkpoint written after the rebuild is the one read.
    env.exec("INSERT INTO gantry_checkpoints VALUES (0, 12, 120, 12, 'p0-12', now())");
    assert_eq!(newest(0).expect("written").batch_seq, 12);
    assert!(newest(2).is_none(), "a partition never checkpointed has none");
}

/// A usage rollup of an earlier release (ordered by day first, without the batch tag) is
/// rebuilt ordered by customer with every row kept, and the columns added since (the
/// ledger's trip, clearing's transactions) are there; a second apply changes nothing.
#[test]
fn an_old_usage_table_is_rebuilt_by_customer_keeping_every_row() {
    let env = Env::new("schema_usage", 1);
    env.exec("DROP TABLE customer_usage_daily");
    env.exec(
        "CREATE TABLE customer_usage_daily (day Date, customer_id String, card_id String, trips UInt64, fee Int64, discount_fee Int64, topups UInt64, topup_amount Int64) ENGINE = MergeTree() ORDER BY (day, customer_id, card_id)",
    );
    env.exec(
        "INSERT INTO customer_usage_daily VALUES ('2026-11-01', 'CU2', '3201', 2, 900, 100, 0, 0), ('2026-11-02', 'CU1', '3202', 1, 450, 50, 1, 5000), ('2026-11-01', 'CU1', '3202', 3, 1350, 150, 0, 0)",
    );
    for _ in 0..2 {
        env.apply_schema();
        let key: Vec<String> = env.query(&format!(
            "SELECT sorting_key FROM system.tables WHERE database = '{}' AND name LIKE 'customer_usage_daily%'",
            env.cfg.database
        ));
        assert_eq!(
            key,
            ["customer_id, card_id, day, gantry_partition, batch_seq"],
            "rebuilt, and the legacy table dropped"
        );
        let rows: Vec<(String, String, u64, i64, i64)> = env.query(
            "SELECT customer_id, toString(day), trips, fee, topup_amount FROM customer_usage_daily ORDER BY customer_id, day",
        );
        assert_eq!(
            rows,
            [
                ("CU1".into(), "2026-11-01".into(), 3, 1350, 0),
                ("CU1".into(), "2026-11-02".into(), 1, 450, 5000),
                ("CU2".into(), "2026-11-01".into(), 2, 900, 0),
            ],
            "every row, once"
        );
    }
    let added: Vec<u64> = env.query(&format!(
        "SELECT count() FROM system.columns WHERE database = '{}' AND ((table = 'ledger' AND name IN ('gantry_id', 'toll_interval_id', 'pay_fee', 'discount_fee', 'plate_enc')) OR (table = 'clearing_daily' AND name = 'trades'))",
        env.cfg.database
    ));
    assert_eq!(added, [6]);
}

/// A database from before `card_activity` gets it filled from its ledger and status list:
/// each card's entries, last balance, last debit and listing, as the card lookup reads them.
#[test]
fn card_activity_is_filled_from_an_older_ledger() {
    let env = Env::new("schema_cards", 1);
    env.exec("DROP TABLE card_activity");
    env.exec(
        "INSERT INTO ledger (card_id, customer_id, entry_id, kind, amount, balance_after, time, gantry_partition, batch_seq, batch_row) VALUES ('3201', 'CU1', 'O1', 'open', 1000, 1000, toDateTime(1794000000), 0, 1, 0), ('3201', 'CU1', 'T1', 'debit', -300, 700, toDateTime(1794000100), 0, 2, 0), ('3201', 'CU1', 'T2', 'debit', -200, 500, toDateTime(1794000200), 0, 2, 1)",
    );
    env.exec(
        "INSERT INTO status_list (card_id, listed, reason, time, gantry_partition, batch_seq) VALUES ('3201', 1, 'lost', toDateTime(1794000300), 0, 3)",
    );
    for _ in 0..2 {
        env.apply_schema();
        let card: Vec<(String, u64, i64, String, i64, u8, String)> = env.query(
            "SELECT anyIf(customer_id, customer_id != ''), toUInt64(sum(entries)), argMaxIf(balance_after, (batch_seq, last_row), entries > 0), argMax(last_debit, (last_debit_time, batch_seq, last_debit_row)), argMax(last_fee, (last_debit_time, batch_seq, last_debit_row)), max(has_status), argMaxIf(list_reason, (batch_seq, listed_at), has_status = 1) FROM card_activity WHERE card_id = '3201'",
        );
        assert_eq!(
            card,
            [("CU1".into(), 3, 500, "T2".into(), 200, 1, "lost".into())],
            "filled once"
        );
    }
}
