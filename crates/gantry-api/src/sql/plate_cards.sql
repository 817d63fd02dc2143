-- example: '7b2b1f8adeec24f9dbecc1bebd04b417'
SELECT card_id, customer_id, count() AS trips,
       min(toUInt32(trans_time)) AS first_seen, max(toUInt32(trans_time)) AS last_seen,
       argMax(gantry_id, trans_time) AS last_gantry_id
FROM settlements
PREWHERE plate_hash = ?
GROUP BY card_id, customer_id
ORDER BY last_seen DESC
LIMIT 1000
