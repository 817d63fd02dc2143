-- example:
SELECT DISTINCT customer_id
FROM card_owners
