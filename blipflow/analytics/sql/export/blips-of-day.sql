-- blips-of-day: every blip (tombstones too) the store first received on `day` (DATE, UTC), as the Parquet export keeps it.
SELECT *
FROM blips
WHERE ingested_at >= timezone('UTC', getvariable('day')::DATE::TIMESTAMP)
  AND ingested_at < timezone('UTC', (getvariable('day')::DATE + 1)::TIMESTAMP)
ORDER BY time_us, uri;
