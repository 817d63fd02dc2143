CREATE TABLE IF NOT EXISTS clearing_daily (
    trade_date Date,
    owner_id String,
    issuer_id String,
    vehicle_type UInt8,
    media_type UInt8,
    n UInt64,
    pay_fee Int64,
    discount_fee Int64,
    fee Int64,
    gantry_partition UInt16,
    batch_seq UInt64,
    trades UInt64
) ENGINE = MergeTree() ORDER BY (trade_date, owner_id, issuer_id, vehicle_type, media_type, gantry_partition, batch_seq)
