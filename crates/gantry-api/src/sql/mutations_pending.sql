-- example:
SELECT count() AS pending
FROM system.mutations
WHERE database = currentDatabase() AND is_done = 0
