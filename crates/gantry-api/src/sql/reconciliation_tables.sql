-- example: 1762704000, 1762790400, 1762704000, 1762790400, 1762704000, 1762790400
SELECT gantry_partition, 'settlements' AS tbl, count() AS n FROM settlements
WHERE (gantry_partition, batch_seq) IN (SELECT gantry_partition, batch_seq FROM gantry_batches WHERE phase = 'committed' AND written_at >= toDateTime(?) AND written_at < toDateTime(?))
GROUP BY gantry_partition
UNION ALL
SELECT gantry_partition, 'rejects' AS tbl, count() AS n FROM rejects
WHERE (gantry_partition, batch_seq) IN (SELECT gantry_partition, batch_seq FROM gantry_batches WHERE phase = 'committed' AND written_at >= toDateTime(?) AND written_at < toDateTime(?))
GROUP BY gantry_partition
UNION ALL
SELECT gantry_partition, 'duplicates' AS tbl, count() AS n FROM duplicates
WHERE (gantry_partition, batch_seq) IN (SELECT gantry_partition, batch_seq FROM gantry_batches WHERE phase = 'committed' AND written_at >= toDateTime(?) AND written_at < toDateTime(?))
GROUP BY gantry_partition
