CREATE MATERIALIZED VIEW IF NOT EXISTS clearing_daily_mv TO clearing_daily AS
SELECT trade_date, owner_id, issuer_id, vehicle_type, media_type,
       count() AS n, sum(pay_fee) AS pay_fee, sum(discount_fee) AS discount_fee, sum(fee) AS fee
FROM settlement_splits
GROUP BY trade_date, owner_id, issuer_id, vehicle_type, media_type
