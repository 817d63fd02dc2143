CREATE TABLE IF NOT EXISTS gantry_checkpoints (
    gantry_partition UInt16,
    batch_seq UInt64,
    lane_next Int64,
    acct_next Int64,
    state String,
    written_at DateTime
) ENGINE = ReplacingMergeTree(batch_seq) ORDER BY gantry_partition
