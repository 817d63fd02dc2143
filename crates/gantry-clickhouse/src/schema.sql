-- Gantry's ClickHouse schema (contract §4). Every statement is idempotent and runs on
-- ClickHouse 18.16 as well as current releases (tests/sql_compat.py checks both).
-- Tables are unpartitioned MergeTrees on purpose: one INSERT is then one part, which is what
-- makes a batch's rows in a table all-or-nothing (see ARCHITECTURE.md, "exactly once").
-- Every output row carries (gantry_partition, batch_seq): the batch that wrote it.

CREATE TABLE IF NOT EXISTS settlements (
    trade_id String,
    trans_time DateTime,
    trade_date Date,
    gantry_id String,
    toll_interval_id String,
    card_id String,
    obu_id String,
    vehicle_plate String,
    pass_id String,
    customer_id String,
    issuer_id String,
    media_type UInt8,
    card_type UInt8,
    vehicle_type UInt8,
    vehicle_class UInt8,
    axle_count UInt8,
    pay_fee Int64,
    discount_fee Int64,
    fee Int64,
    lane_fee Nullable(Int64),
    tariff_version String,
    balance_after Int64,
    flags UInt32,
    source_partition Int32,
    source_offset Int64,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (trade_date, trade_id);

CREATE TABLE IF NOT EXISTS settlement_splits (
    trade_id String,
    trade_date Date,
    trans_time DateTime,
    interval_id String,
    owner_id String,
    issuer_id String,
    vehicle_type UInt8,
    media_type UInt8,
    pay_fee Int64,
    discount_fee Int64,
    fee Int64,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (trade_date, owner_id, interval_id);

CREATE TABLE IF NOT EXISTS ledger (
    card_id String,
    customer_id String,
    entry_id String,
    kind String,
    amount Int64,
    balance_after Int64,
    time DateTime,
    entry_date Date,
    source_partition Int32,
    source_offset Int64,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (customer_id, card_id, time);

CREATE TABLE IF NOT EXISTS rejects (
    source String,
    reason String,
    detail String,
    raw String,
    time DateTime,
    topic String,
    source_partition Int32,
    source_offset Int64,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (reason, time);

CREATE TABLE IF NOT EXISTS duplicates (
    trade_id String,
    kind String,
    source String,
    time DateTime,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (time, trade_id);

CREATE TABLE IF NOT EXISTS status_list (
    card_id String,
    listed UInt8,
    reason String,
    time DateTime,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (card_id, time);

CREATE TABLE IF NOT EXISTS clearing_daily (
    trade_date Date,
    owner_id String,
    issuer_id String,
    vehicle_type UInt8,
    media_type UInt8,
    n UInt64,
    pay_fee Int64,
    discount_fee Int64,
    fee Int64
) ENGINE = SummingMergeTree() ORDER BY (trade_date, owner_id, issuer_id, vehicle_type, media_type);

CREATE MATERIALIZED VIEW IF NOT EXISTS clearing_daily_mv TO clearing_daily AS
SELECT trade_date, owner_id, issuer_id, vehicle_type, media_type,
       count() AS n, sum(pay_fee) AS pay_fee, sum(discount_fee) AS discount_fee, sum(fee) AS fee
FROM settlement_splits
GROUP BY trade_date, owner_id, issuer_id, vehicle_type, media_type;

CREATE TABLE IF NOT EXISTS customer_usage_daily (
    day Date,
    customer_id String,
    card_id String,
    trips UInt64,
    fee Int64,
    discount_fee Int64,
    topups UInt64,
    topup_amount Int64
) ENGINE = SummingMergeTree() ORDER BY (day, customer_id, card_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_usage_trips_mv TO customer_usage_daily AS
SELECT trade_date AS day, customer_id, card_id,
       count() AS trips, sum(fee) AS fee, sum(discount_fee) AS discount_fee,
       toUInt64(0) AS topups, toInt64(0) AS topup_amount
FROM settlements
WHERE card_id != ''
GROUP BY trade_date, customer_id, card_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_usage_topups_mv TO customer_usage_daily AS
SELECT entry_date AS day, customer_id, card_id,
       toUInt64(0) AS trips, toInt64(0) AS fee, toInt64(0) AS discount_fee,
       count() AS topups, sum(amount) AS topup_amount
FROM ledger
WHERE kind = 'topup'
GROUP BY entry_date, customer_id, card_id;

CREATE TABLE IF NOT EXISTS gantry_batches (
    gantry_partition UInt16,
    batch_seq UInt64,
    phase String,
    lane_from Int64,
    lane_to Int64,
    acct_from Int64,
    acct_to Int64,
    messages UInt64,
    lane_records UInt64,
    settled UInt64,
    lane_rejected UInt64,
    lane_duplicates UInt64,
    account_events UInt64,
    events_applied UInt64,
    events_rejected UInt64,
    events_duplicates UInt64,
    written_at DateTime,
    instance String
) ENGINE = MergeTree() ORDER BY (gantry_partition, batch_seq);

CREATE TABLE IF NOT EXISTS gantry_checkpoints (
    gantry_partition UInt16,
    batch_seq UInt64,
    lane_next Int64,
    acct_next Int64,
    state String,
    written_at DateTime
) ENGINE = MergeTree() ORDER BY (gantry_partition, batch_seq);
