-- example: 1762704000, 1762790400
SELECT gantry_partition, batch_seq, phase, lane_from, lane_to, acct_from, acct_to, messages,
       lane_records, settled, lane_rejected, lane_duplicates,
       account_events, events_applied, events_rejected, events_duplicates,
       written_at, instance, clock_ms, tariff_set, journal_format, late_known
FROM gantry_batches
WHERE phase = 'committed' AND written_at >= toDateTime(?) AND written_at < toDateTime(?)
ORDER BY gantry_partition, batch_seq
LIMIT 1 BY gantry_partition, batch_seq
