-- example: 'CU1'
ALTER TABLE settlements
UPDATE vehicle_plate = '', plate_enc = '', plate_hash = '', obu_id = '', pass_id = ''
WHERE customer_id = ?
