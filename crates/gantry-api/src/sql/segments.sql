-- example: '2026-11-30', 90, '2026-11-30'
SELECT customer_id, toString(maxIf(day, trips > 0)) AS last_trip, sum(trips) AS trip_count, sum(fee) AS spend
FROM customer_usage_daily
WHERE day > toDate(?) - ? AND day <= toDate(?)
GROUP BY customer_id
HAVING trip_count > 0
