CREATE MATERIALIZED VIEW IF NOT EXISTS customer_usage_topups_mv TO customer_usage_daily AS
SELECT entry_date AS day, customer_id, card_id,
       toUInt64(0) AS trips, toInt64(0) AS fee, toInt64(0) AS discount_fee,
       count() AS topups, sum(amount) AS topup_amount
FROM ledger
WHERE kind = 'topup'
GROUP BY entry_date, customer_id, card_id
