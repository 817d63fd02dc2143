-- example: 'CU1', '2026-11-01', '2026-11-30'
SELECT toString(day) AS d, card_id, sum(trips) AS trips, sum(fee) AS fee, sum(discount_fee) AS discount_fee,
       sum(topups) AS topups, sum(topup_amount) AS topup_amount
FROM customer_usage_daily
PREWHERE customer_id = ?
WHERE day >= toDate(?) AND day <= toDate(?)
GROUP BY d, card_id
ORDER BY d, card_id
