-- example: 'CU1', 'CU1', 'CU1'
SELECT (SELECT count() FROM settlements WHERE customer_id = ? AND (plate_enc != '' OR plate_hash != '' OR vehicle_plate != '' OR obu_id != ''))
     + (SELECT count() FROM ledger WHERE customer_id = ? AND plate_enc != '')
     + (SELECT count() FROM card_activity WHERE customer_id = ? AND last_plate_enc != '') AS left
