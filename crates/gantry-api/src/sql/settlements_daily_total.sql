-- example: '2026-11-10'
SELECT uniqExact(trade_id) AS transactions
FROM settlement_splits
WHERE trade_date = toDate(?)
