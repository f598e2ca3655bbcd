-- errors: each agent's failed and retried Letta calls: error rate per call, retry rate per window sent, and the commonest error now.
-- A call failed unless it settled its window (answered or silent) or is still under way; a window recovered from Letta after a timeout counts as settled.
-- failing: windows whose last call failed and that wait to be sent again; their error is the one shown.
SELECT agent,
       count(*) FILTER (attempts > 0) AS windows_sent,
       coalesce(sum(attempts), 0)::BIGINT AS calls,
       coalesce(sum(attempts - CASE WHEN state IN ('answered', 'silent', 'sending') AND attempts > 0 THEN 1 ELSE 0 END), 0)
           ::BIGINT AS failed_calls,
       round(failed_calls / nullif(calls, 0), 4) AS error_rate,
       count(*) FILTER (attempts > 1) AS retried_windows,
       round(retried_windows / nullif(windows_sent, 0), 4) AS retry_rate,
       count(*) FILTER (state = 'failed') AS failing,
       mode(error) FILTER (state = 'failed') AS top_error
FROM windows_in_range()
GROUP BY agent
ORDER BY agent;
