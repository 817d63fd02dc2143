CREATE TABLE IF NOT EXISTS api_audit (
    time DateTime,
    time_ms UInt16,
    request_id String,
    key_id String,
    roles String,
    method String,
    endpoint String,
    query String,
    customer_id String,
    card_id String,
    personal UInt8,
    pii_shown UInt8,
    status UInt16
) ENGINE = MergeTree() ORDER BY (time, key_id)
