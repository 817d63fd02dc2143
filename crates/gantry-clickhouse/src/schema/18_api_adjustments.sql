CREATE TABLE IF NOT EXISTS api_adjustments (
    adjust_id String,
    card_id String,
    trade_id String,
    amount Int64,
    reason String,
    key_id String,
    published_at DateTime
) ENGINE = MergeTree() ORDER BY (trade_id, adjust_id)
