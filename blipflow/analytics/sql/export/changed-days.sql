-- changed-days: the days (UTC) whose blips changed after `since` (TIMESTAMPTZ; unset: every day), and the newest change.
-- A blip's day is the day the store first received it, which no later operation changes, so each blip stays in one day.
SELECT CAST(timezone('UTC', ingested_at) AS DATE) AS day, max(max(updated_at)) OVER () AS changed_until
FROM blips
WHERE updated_at > coalesce(getvariable('since')::TIMESTAMPTZ, '-infinity'::TIMESTAMPTZ)
GROUP BY day
ORDER BY day;
