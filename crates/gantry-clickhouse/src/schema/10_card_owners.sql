CREATE TABLE IF NOT EXISTS card_owners (
    card_id String,
    customer_id String,
    opened_at DateTime,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (card_id, gantry_partition, batch_seq) SETTINGS index_granularity = 1024