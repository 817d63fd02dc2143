CREATE TABLE IF NOT EXISTS ledger (
    card_id String,
    customer_id String,
    entry_id String,
    kind String,
    amount Int64,
    balance_after Int64,
    time DateTime,
    entry_date Date,
    source_partition Int32,
    source_offset Int64,
    gantry_partition UInt16,
    batch_seq UInt64,
    batch_row UInt32
) ENGINE = MergeTree() ORDER BY (customer_id, card_id, time)
