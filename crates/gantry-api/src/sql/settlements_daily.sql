-- example: '2026-11-10'
SELECT owner_id, uniqExact(trade_id) AS transactions, count() AS unit_passages,
       sum(pay_fee) AS pay_fee, sum(discount_fee) AS discount_fee, sum(fee) AS fee
FROM settlement_splits
WHERE trade_date = toDate(?)
GROUP BY owner_id
ORDER BY owner_id
