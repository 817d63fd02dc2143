-- example:
SELECT DISTINCT customer_id
FROM card_activity
WHERE customer_id != ''
