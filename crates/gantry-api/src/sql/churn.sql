-- example: '2026-11-30', 30, '2026-11-30', 30, '2026-11-30', 120, '2026-11-30'
SELECT customer_id,
       sumIf(trips, day > toDate(?) - ?) AS recent,
       sumIf(trips, day <= toDate(?) - ? AND day > toDate(?) - ?) AS baseline,
       toString(maxIf(day, trips > 0)) AS last_trip,
       toString(maxIf(day, topups > 0)) AS last_topup,
       sum(topups) AS topup_count
FROM customer_usage_daily
WHERE day <= toDate(?)
GROUP BY customer_id
