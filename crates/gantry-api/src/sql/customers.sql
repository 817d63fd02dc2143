-- example:
SELECT DISTINCT customer_id
FROM ledger
PREWHERE kind = 'open'
