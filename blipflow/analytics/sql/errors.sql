-- errors: each agent's attempts to deliver a window and how many failed: error rate per attempt, retry rate per window sent, and the commonest error now.
-- An attempt is counted once, when it ends (answered, silent, recovered from Letta, failed or quarantined), by the same
-- counters `blipflow status` reads; each failed one is one line in dispatch's log.
-- failing: windows whose last attempt failed and that wait to be sent again; quarantined: set aside (`blipflow windows`).
SELECT agent,
       count(*) FILTER (attempts > 0) AS windows_sent,
       coalesce(sum(attempts), 0)::BIGINT AS calls,
       coalesce(sum(failures), 0)::BIGINT AS failed_calls,
       round(failed_calls / nullif(calls, 0), 4) AS error_rate,
       count(*) FILTER (attempts > 1) AS retried_windows,
       round(retried_windows / nullif(windows_sent, 0), 4) AS retry_rate,
       count(*) FILTER (state = 'failed') AS failing,
       count(*) FILTER (state = 'quarantined') AS quarantined,
       mode(error) FILTER (state IN ('failed', 'quarantined')) AS top_error
FROM windows_in_range()
GROUP BY agent
ORDER BY agent;
