-- example: 'CU1', 1764518400
SELECT card_id, entry_id, kind, amount, balance_after, toUInt32(time) AS t, batch_seq, batch_row, booked
FROM ledger
ANY INNER JOIN
(
    SELECT gantry_partition, batch_seq, toUInt32(min(written_at)) AS booked
    FROM gantry_batches
    WHERE phase = 'committed'
    GROUP BY gantry_partition, batch_seq
) AS batches USING (gantry_partition, batch_seq)
WHERE customer_id = ? AND booked < ?
ORDER BY card_id, batch_seq, batch_row
