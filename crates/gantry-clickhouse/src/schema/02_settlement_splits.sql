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
) ENGINE = MergeTree() ORDER BY (trade_date, owner_id, interval_id)
