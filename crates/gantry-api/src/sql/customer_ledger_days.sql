-- example: 'CU1', '2026-11-30'
SELECT card_id, toString(entry_date) AS d, argMax(balance_after, (batch_seq, batch_row)) AS balance,
       maxIf(toUInt32(time), kind = 'debit') AS last_debit_time,
       argMaxIf(entry_id, toUInt32(time), kind = 'debit') AS last_debit
FROM ledger
WHERE customer_id = ? AND entry_date <= toDate(?)
GROUP BY card_id, d
ORDER BY card_id, d
