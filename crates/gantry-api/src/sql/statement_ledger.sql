-- example: 'CU1', 'CU1', 1764518400
SELECT card_id, entry_id, kind, amount, balance_after, toUInt32(time) AS t, batch_seq, batch_row, booked,
       gantry_id, toll_interval_id, pay_fee, discount_fee, plate_enc
FROM ledger
ANY INNER JOIN
(
    SELECT gantry_partition, batch_seq, toUInt32(min(written_at)) AS booked
    FROM gantry_batches
    WHERE phase = 'committed'
      AND (gantry_partition, batch_seq) IN (SELECT gantry_partition, batch_seq FROM ledger WHERE customer_id = ?)
    GROUP BY gantry_partition, batch_seq
) AS batches USING (gantry_partition, batch_seq)
WHERE customer_id = ? AND booked < ?
ORDER BY card_id, batch_seq, batch_row
