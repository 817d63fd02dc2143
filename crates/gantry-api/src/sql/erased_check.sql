-- example: 'CU1'
SELECT count() AS left
FROM settlements
WHERE customer_id = ? AND (plate_enc != '' OR plate_hash != '' OR vehicle_plate != '' OR obu_id != '')
