-- example: 'CU1'
ALTER TABLE ledger
UPDATE plate_enc = ''
WHERE customer_id = ?
