CREATE TABLE IF NOT EXISTS gantry_tariff_sets (
    set_id UInt64,
    versions Array(String),
    source_hashes Array(UInt64),
    written_at DateTime,
    instance String
) ENGINE = MergeTree() ORDER BY set_id
