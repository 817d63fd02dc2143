-- example: 1762704000, 1762790400
SELECT visitParamExtractString(detail, 'cardId') AS card_id,
       visitParamExtractString(raw, 'tradeId') AS trade_id,
       toUInt32(time) AS t,
       visitParamExtractString(raw, 'gantryId') AS gantry_id,
       visitParamExtractInt(detail, 'payFee') AS pay_fee,
       visitParamExtractInt(detail, 'discountFee') AS discount_fee,
       visitParamExtractInt(detail, 'fee') AS fee,
       visitParamExtractString(detail, 'tariffVersion') AS tariff_version
FROM rejects
WHERE reason = 'unknown_card' AND time >= toDateTime(?) AND time < toDateTime(?)
ORDER BY card_id, t, trade_id
LIMIT 1 BY trade_id
