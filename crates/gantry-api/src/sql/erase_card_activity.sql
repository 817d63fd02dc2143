-- example: 'CU1'
ALTER TABLE card_activity
UPDATE last_plate_enc = ''
WHERE customer_id = ?
