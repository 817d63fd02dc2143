-- example: '32011820220000123456'
SELECT customer_id
FROM card_activity
WHERE card_id = ? AND customer_id != ''
LIMIT 1
