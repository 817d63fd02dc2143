-- example: 'T1'
SELECT sum(amount) AS refunded
FROM (SELECT adjust_id, any(amount) AS amount FROM api_adjustments WHERE trade_id = ? GROUP BY adjust_id)
