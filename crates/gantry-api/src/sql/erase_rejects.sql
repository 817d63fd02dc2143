-- example: '32011820220000123456'
ALTER TABLE rejects
UPDATE raw = ''
WHERE position(raw, ?) > 0
