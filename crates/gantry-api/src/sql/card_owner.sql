-- example: '32011820220000123456'
SELECT customer_id
FROM card_owners
WHERE card_id = ?
LIMIT 1
