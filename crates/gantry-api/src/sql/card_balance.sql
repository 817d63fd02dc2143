-- example: 'CU1', '32011820220000123456'
SELECT argMax(balance_after, (batch_seq, batch_row)) AS balance, count() AS entries,
       maxIf(toUInt32(time), kind = 'debit') AS last_debit_time,
       argMaxIf(entry_id, toUInt32(time), kind = 'debit') AS last_debit
FROM ledger
WHERE customer_id = ? AND card_id = ?
