CREATE TABLE IF NOT EXISTS gantry_tariffs (
    version String,
    source_hash UInt64,
    effective_from_ms Int64,
    tariff_toml String,
    intervals_csv String,
    written_at DateTime,
    instance String
) ENGINE = MergeTree() ORDER BY (version, source_hash)
