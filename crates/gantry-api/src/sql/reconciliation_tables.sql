-- example: 1762704000, 1762790400, 0, 1762704000, 1762790400, 0, 1762704000, 1762790400, 0
SELECT gantry_partition, batch_seq, 'settlements' AS tbl, count() AS n FROM settlements
WHERE (gantry_partition, batch_seq) IN (SELECT gantry_partition, batch_seq FROM gantry_batches WHERE phase = 'committed' AND written_at >= toDateTime(?) AND written_at < toDateTime(?) AND batch_seq >= ?)
GROUP BY gantry_partition, batch_seq
UNION ALL
SELECT gantry_partition, batch_seq, 'rejects' AS tbl, count() AS n FROM rejects
WHERE (gantry_partition, batch_seq) IN (SELECT gantry_partition, batch_seq FROM gantry_batches WHERE phase = 'committed' AND written_at >= toDateTime(?) AND written_at < toDateTime(?) AND batch_seq >= ?)
GROUP BY gantry_partition, batch_seq
UNION ALL
SELECT gantry_partition, batch_seq, 'duplicates' AS tbl, count() AS n FROM duplicates
WHERE (gantry_partition, batch_seq) IN (SELECT gantry_partition, batch_seq FROM gantry_batches WHERE phase = 'committed' AND written_at >= toDateTime(?) AND written_at < toDateTime(?) AND batch_seq >= ?)
GROUP BY gantry_partition, batch_seq
