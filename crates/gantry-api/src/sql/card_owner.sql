-- example: '32011820220000123456'
SELECT customer_id
FROM ledger
PREWHERE card_id = ?
WHERE kind = 'open'
LIMIT 1
