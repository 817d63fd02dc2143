CREATE MATERIALIZED VIEW IF NOT EXISTS customer_usage_trips_mv TO customer_usage_daily AS
SELECT trade_date AS day, customer_id, card_id,
       count() AS trips, sum(fee) AS fee, sum(discount_fee) AS discount_fee,
       toUInt64(0) AS topups, toInt64(0) AS topup_amount
FROM settlements
WHERE card_id != ''
GROUP BY trade_date, customer_id, card_id
