-- example: 'CU1', '2026-11-30'
SELECT card_id, toString(entry_date) AS d, argMax(balance_after, (batch_seq, batch_row)) AS balance,
       maxIf(toUInt32(time), kind = 'debit') AS last_debit_time,
       argMaxIf(entry_id, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_debit,
       argMaxIf(gantry_id, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_gantry_id,
       argMaxIf(toll_interval_id, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_units,
       argMaxIf(amount, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_amount,
       argMaxIf(plate_enc, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_plate_enc
FROM ledger
WHERE customer_id = ? AND entry_date <= toDate(?)
GROUP BY card_id, d
ORDER BY card_id, d
