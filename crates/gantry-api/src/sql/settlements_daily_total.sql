-- example: '2026-11-10'
SELECT count() AS transactions
FROM settlements
WHERE trade_date = toDate(?)
