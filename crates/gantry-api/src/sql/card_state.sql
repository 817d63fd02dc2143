-- example: '32011820220000123456'
SELECT anyIf(customer_id, customer_id != '') AS owner,
       argMaxIf(balance_after, (batch_seq, last_row), entries > 0) AS balance,
       toUInt64(sum(entries)) AS entry_count,
       max(last_debit_time) AS debit_time,
       argMax(last_debit, (last_debit_time, batch_seq, last_debit_row)) AS debit,
       argMax(last_gantry_id, (last_debit_time, batch_seq, last_debit_row)) AS debit_gantry_id,
       argMax(last_units, (last_debit_time, batch_seq, last_debit_row)) AS debit_units,
       -argMax(last_fee, (last_debit_time, batch_seq, last_debit_row)) AS debit_amount,
       argMax(last_plate_enc, (last_debit_time, batch_seq, last_debit_row)) AS debit_plate_enc,
       max(has_status) AS has_listing,
       argMaxIf(listed, (batch_seq, listed_at), has_status = 1) AS is_listed,
       argMaxIf(list_reason, (batch_seq, listed_at), has_status = 1) AS reason,
       argMaxIf(toUInt32(listed_at), (batch_seq, listed_at), has_status = 1) AS since
FROM card_activity
WHERE card_id = ?
