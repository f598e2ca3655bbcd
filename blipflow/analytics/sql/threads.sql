-- threads: the longest threads rebuilt from reply references (blips grouped by reply.root), with participants and reply depth; top 20.
-- depth counts replies in the longest chain (a lone root: 0). With `agent` set, threads that agent wrote in.
WITH RECURSIVE
thread_blips AS (SELECT coalesce(reply_root_uri, uri) AS root, uri, did, time_us, reply_parent_uri FROM blips_in_range()),
ranked AS (
    SELECT root, count(*) AS blips, make_timestamp(min(time_us)) AS first_at, make_timestamp(max(time_us)) AS last_at
    FROM thread_blips
    WHERE getvariable('agent') IS NULL
       OR root IN (SELECT root FROM thread_blips WHERE did = chosen_agent_did())
    GROUP BY root
    ORDER BY blips DESC, last_at DESC, root
    LIMIT coalesce(getvariable('top'), 20)
),
members AS (SELECT uri, did, reply_parent_uri, root FROM thread_blips SEMI JOIN ranked USING (root)),
levels(uri, root, depth) AS (
    SELECT uri, root, 0 FROM members m
    WHERE NOT EXISTS (SELECT 1 FROM members parent WHERE parent.uri = m.reply_parent_uri)
    UNION ALL
    SELECT m.uri, m.root, levels.depth + 1 FROM levels JOIN members m ON m.reply_parent_uri = levels.uri
),
shapes AS (
    SELECT root, count(DISTINCT did) AS participants,
           count(DISTINCT did) FILTER (did IN (SELECT did FROM agents())) AS agents,
           (SELECT max(depth) FROM levels WHERE levels.root = members.root) AS depth
    FROM members GROUP BY root
)
SELECT r.root, coalesce(x.author, first.did) AS started_by, left(first.content, 80) AS opening, r.blips,
       s.participants, s.agents, s.depth, r.first_at, r.last_at
FROM ranked r JOIN shapes s USING (root)
LEFT JOIN blips first ON first.uri = r.root
LEFT JOIN authors() x ON x.did = first.did
ORDER BY r.blips DESC, r.last_at DESC, r.root;
