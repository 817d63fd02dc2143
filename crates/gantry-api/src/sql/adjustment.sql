-- example: 'A1'
SELECT adjust_id, card_id, trade_id, amount, reason
FROM api_adjustments
WHERE adjust_id = ?
LIMIT 1
