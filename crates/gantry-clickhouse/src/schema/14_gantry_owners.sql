CREATE TABLE IF NOT EXISTS gantry_owners (
    gantry_partition UInt16,
    epoch UInt64,
    instance String,
    taken_at DateTime
) ENGINE = MergeTree() ORDER BY (gantry_partition, epoch)
