-- example: 'CU1', '32011820220000123456', 'T1'
SELECT kind, amount, toUInt32(time) AS t
FROM ledger
WHERE customer_id = ? AND card_id = ? AND entry_id = ?
LIMIT 1
