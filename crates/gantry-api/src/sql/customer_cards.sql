-- example: 'CU1'
SELECT DISTINCT card_id
FROM ledger
WHERE customer_id = ? AND kind = 'open'
ORDER BY card_id
