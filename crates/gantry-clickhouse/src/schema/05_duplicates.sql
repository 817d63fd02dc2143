CREATE TABLE IF NOT EXISTS duplicates (
    trade_id String,
    kind String,
    source String,
    time DateTime,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (time, trade_id)
