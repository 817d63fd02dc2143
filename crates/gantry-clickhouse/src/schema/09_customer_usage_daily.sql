CREATE TABLE IF NOT EXISTS customer_usage_daily (
    day Date,
    customer_id String,
    card_id String,
    trips UInt64,
    fee Int64,
    discount_fee Int64,
    topups UInt64,
    topup_amount Int64,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (customer_id, card_id, day, gantry_partition, batch_seq)
