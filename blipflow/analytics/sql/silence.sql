-- silence: each agent's windows by outcome, and its silence rate: the share of the windows it read that it chose not to answer.
-- open: pending or being sent now. From the dispatch ledger; a window's time is when it was opened.
SELECT agent, count(*) AS windows,
       count(*) FILTER (state = 'answered') AS answered,
       count(*) FILTER (state = 'silent') AS silent,
       count(*) FILTER (state = 'failed') AS failed,
       count(*) FILTER (state IN ('pending', 'sending')) AS open,
       round(count(*) FILTER (state = 'silent') / nullif(count(*) FILTER (state IN ('answered', 'silent')), 0), 4)
           AS silence_rate
FROM windows_in_range()
GROUP BY agent
ORDER BY agent;
