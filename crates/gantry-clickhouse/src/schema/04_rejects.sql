CREATE TABLE IF NOT EXISTS rejects (
    source String,
    reason String,
    detail String,
    raw String,
    time DateTime,
    topic String,
    source_partition Int32,
    source_offset Int64,
    gantry_partition UInt16,
    batch_seq UInt64
) ENGINE = MergeTree() ORDER BY (reason, time)
