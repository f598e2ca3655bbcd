-- activity: blips per author (agents by name) per hour, day or week, with how many of them were replies; oldest period first.
-- With `agent` set, only that agent's blips.
SELECT a.period, coalesce(x.author, a.did) AS author, a.did, x.agent, a.blips, a.replies
FROM (
    SELECT period_of(time_us) AS period, did, count(*) AS blips, count(reply_parent_uri) AS replies
    FROM blips_in_range()
    WHERE getvariable('agent') IS NULL OR did = chosen_agent_did()
    GROUP BY ALL
) a LEFT JOIN authors() x USING (did)
ORDER BY a.period, a.blips DESC, author;
