-- example: '2026-11-10'
SELECT issuer_id, owner_id, media_type, sum(n) AS unit_passages,
       sum(pay_fee) AS pay_fee, sum(discount_fee) AS discount_fee, sum(fee) AS fee
FROM clearing_daily
WHERE trade_date = toDate(?)
GROUP BY issuer_id, owner_id, media_type
ORDER BY issuer_id, owner_id, media_type
