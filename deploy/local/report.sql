-- The demo's finance report. Each query is separated by a line holding only ';'.
-- {db} is replaced by the database name. Checked on 18.16 and current ClickHouse by tests/sql_compat.py.
SELECT owner_id, sum(n) AS unit_passages, sum(pay_fee) AS pay_fee_fen, sum(discount_fee) AS discount_fen, sum(fee) AS fee_fen
FROM {db}.clearing_daily GROUP BY owner_id ORDER BY fee_fen DESC LIMIT 10
;
SELECT issuer_id, owner_id, sum(fee) AS owed_fen
FROM {db}.clearing_daily GROUP BY issuer_id, owner_id ORDER BY owed_fen DESC LIMIT 10
;
SELECT reason, count() AS records FROM {db}.rejects GROUP BY reason ORDER BY records DESC
;
SELECT kind, count() AS records FROM {db}.duplicates GROUP BY kind ORDER BY kind
;
SELECT reason, countIf(listed = 1) AS put_on_list, countIf(listed = 0) AS taken_off FROM {db}.status_list GROUP BY reason ORDER BY reason
;
SELECT gantry_partition, sum(lane_records) AS consumed_n, sum(settled) AS settled_n, sum(lane_rejected) AS rejected_n, sum(lane_duplicates) AS duplicates_n,
       consumed_n - settled_n - rejected_n - duplicates_n AS difference
FROM {db}.gantry_batches WHERE phase = 'committed' GROUP BY gantry_partition ORDER BY gantry_partition
