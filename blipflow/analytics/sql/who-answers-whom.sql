-- who-answers-whom: the reply graph, one edge per (replier, replied-to author) with how many replies went that way; busiest first.
-- The replied-to author is the repository its reply.parent reference names (whether or not that blip is stored).
-- Replies to one's own blips are left out. With `agent` set, the edges that agent is on, either end.
SELECT coalesce(s.author, e.source_did) AS source, coalesce(t.author, e.target_did) AS target,
       s.agent IS NOT NULL AS source_is_agent, t.agent IS NOT NULL AS target_is_agent, e.replies,
       e.source_did, e.target_did
FROM (
    SELECT did AS source_did, split_part(reply_parent_uri, '/', 3) AS target_did,  -- at://<did>/<collection>/<rkey>
           count(*) AS replies
    FROM blips_in_range()
    WHERE reply_parent_uri IS NOT NULL AND NOT starts_with(reply_parent_uri, 'at://' || did || '/')
      AND (getvariable('agent') IS NULL OR chosen_agent_did() IN (did, split_part(reply_parent_uri, '/', 3)))
    GROUP BY ALL
) e LEFT JOIN authors() s ON s.did = e.source_did LEFT JOIN authors() t ON t.did = e.target_did
ORDER BY e.replies DESC, source, target;
