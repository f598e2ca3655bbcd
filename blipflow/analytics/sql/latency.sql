-- latency: how long each agent takes to answer, as a distribution: ms from the blip a reply answers (its reply.parent) to the reply.
-- Replies to one's own blips do not count, nor parents edited or deleted since (their time is then the edit's).
-- With `agents` unset every author counts as an agent; with `agent` set, only that agent.
SELECT coalesce(x.author, r.did) AS agent, r.did, r.replies, r.min_ms, r.p10_ms, r.p25_ms, r.median_ms, r.p75_ms,
       r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms
FROM (
    SELECT did, count(*) AS replies,
           round(min(ms), 1) AS min_ms,
           round(quantile_cont(ms, 0.10), 1) AS p10_ms,
           round(quantile_cont(ms, 0.25), 1) AS p25_ms,
           round(quantile_cont(ms, 0.50), 1) AS median_ms,
           round(quantile_cont(ms, 0.75), 1) AS p75_ms,
           round(quantile_cont(ms, 0.90), 1) AS p90_ms,
           round(quantile_cont(ms, 0.99), 1) AS p99_ms,
           round(max(ms), 1) AS max_ms,
           round(avg(ms), 1) AS mean_ms
    FROM (
        SELECT r.did, (r.time_us - p.time_us) / 1000 AS ms
        FROM blips_in_range() r JOIN blips p ON p.uri = r.reply_parent_uri
        WHERE p.did <> r.did AND NOT p.deleted AND p.operation = 'create'
          AND (getvariable('agents') IS NULL OR r.did IN (SELECT did FROM agents()))
          AND (getvariable('agent') IS NULL OR r.did = chosen_agent_did())
    )
    GROUP BY did
) r LEFT JOIN authors() x USING (did)
ORDER BY r.median_ms, agent;
