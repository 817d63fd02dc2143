-- example: 'CU1', '2026-11-01', '2026-11-30'
SELECT trade_id, toUInt32(trans_time) AS t, gantry_id, toll_interval_id, plate_enc, card_type,
       pay_fee, discount_fee, fee
FROM settlements
PREWHERE customer_id = ?
WHERE trade_date >= toDate(?) AND trade_date <= toDate(?)
