-- example: 1762704000, 1762790400
SELECT DISTINCT card_id
FROM card_activity
WHERE entries > 0 AND card_id IN (SELECT visitParamExtractString(detail, 'cardId') FROM rejects WHERE reason = 'unknown_card' AND time >= toDateTime(?) AND time < toDateTime(?))
