-- example: '32011820220000123456'
SELECT listed, reason, toUInt32(time) AS t
FROM status_list
WHERE card_id = ?
ORDER BY batch_seq DESC, t DESC
LIMIT 1
