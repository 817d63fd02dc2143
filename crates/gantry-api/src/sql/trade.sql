-- example: '2026-11-10', 'T1'
SELECT trade_id, toUInt32(trans_time) AS t, gantry_id, toll_interval_id, plate_enc, card_type,
       pay_fee, discount_fee, fee
FROM settlements
WHERE trade_date = toDate(?) AND trade_id = ?
LIMIT 1
