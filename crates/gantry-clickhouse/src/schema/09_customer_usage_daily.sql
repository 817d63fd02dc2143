CREATE TABLE IF NOT EXISTS customer_usage_daily (
    day Date,
    customer_id String,
    card_id String,
    trips UInt64,
    fee Int64,
    discount_fee Int64,
    topups UInt64,
    topup_amount Int64
) ENGINE = SummingMergeTree() ORDER BY (day, customer_id, card_id)
