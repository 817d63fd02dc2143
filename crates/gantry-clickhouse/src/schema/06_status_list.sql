CREATE TABLE IF NOT EXISTS status_list (
    card_id String,
    listed UInt8,
    reason String,
    time DateTime,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (card_id, time)
