-- example: '2026-11-10'
SELECT owner_id, sum(trades) AS transactions, sum(n) AS unit_passages,
       sum(pay_fee) AS pay_fee, sum(discount_fee) AS discount_fee, sum(fee) AS fee
FROM clearing_daily
WHERE trade_date = toDate(?)
GROUP BY owner_id
ORDER BY owner_id
