-- example: 'CU1', '32011820220000123456'
SELECT argMax(balance_after, (batch_seq, batch_row)) AS balance, count() AS entries,
       maxIf(toUInt32(time), kind = 'debit') AS last_debit_time,
       argMaxIf(entry_id, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_debit,
       argMaxIf(gantry_id, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_gantry_id,
       argMaxIf(toll_interval_id, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_units,
       argMaxIf(amount, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_amount,
       argMaxIf(plate_enc, (toUInt32(time), batch_seq, batch_row), kind = 'debit') AS last_plate_enc
FROM ledger
WHERE customer_id = ? AND card_id = ?
