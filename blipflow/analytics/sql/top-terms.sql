-- top-terms: the words used most per hour, day or week, leaving out common English words and words under 3 letters; top 10 per period.
-- Words are split at whitespace, lower-cased and stripped of surrounding punctuation. The report counts whole hours: the
-- hours that `since` and `until` fall in count in full. With `agent` set, only that agent's blips.
--
-- Counting words is what costs, so everyone's words are counted once per hour and kept in the store, in analytics_terms
-- and analytics_term_hours (derived data: dropping them only makes the next run slower). An hour is counted again when
-- the fingerprint of its blips changes (a blip stored, edited or deleted). One agent's words are counted afresh.

CREATE TABLE IF NOT EXISTS analytics_term_hours (hour TIMESTAMP PRIMARY KEY, fingerprint HUGEINT NOT NULL);
CREATE TABLE IF NOT EXISTS analytics_terms (hour TIMESTAMP NOT NULL, term VARCHAR NOT NULL, uses BIGINT NOT NULL);

CREATE OR REPLACE TEMP MACRO hour_of(time_us) AS date_trunc('hour', make_timestamp(time_us));
CREATE OR REPLACE TEMP MACRO in_whole_hours(time_us) AS
    time_us >= coalesce(epoch_us(date_trunc('hour', getvariable('since')::TIMESTAMPTZ)), 0)
    AND time_us < coalesce(epoch_us(date_trunc('hour', getvariable('until')::TIMESTAMPTZ - INTERVAL 1 MICROSECOND))
                           + 3600000000, 9223372036854775807);
CREATE OR REPLACE TEMP MACRO stopword(term) AS term IN (
    'the', 'and', 'for', 'are', 'but', 'not', 'you', 'all', 'any', 'can', 'had', 'her', 'was', 'one', 'our', 'out',
    'has', 'him', 'his', 'how', 'its', 'may', 'new', 'now', 'old', 'see', 'two', 'way', 'who', 'did', 'get', 'let',
    'say', 'she', 'too', 'use', 'yes', 'yet', 'also', 'been', 'from', 'have', 'here', 'into', 'just', 'like', 'more',
    'most', 'much', 'must', 'only', 'over', 'some', 'such', 'than', 'that', 'them', 'then', 'they', 'this', 'very',
    'were', 'what', 'when', 'will', 'with', 'your', 'about', 'after', 'being', 'could', 'every', 'other', 'their',
    'there', 'these', 'those', 'which', 'while', 'would', 'should', 'where', 'because', 'through', 'it''s', 'i''m',
    'don''t', 'can''t', 'we''re', 'that''s', 'there''s');
CREATE OR REPLACE TEMP MACRO blips_in_whole_hours() AS TABLE
    SELECT uri, did, time_us, content, seq, updated_at FROM blips
    WHERE collection = 'stream.thought.blip' AND NOT deleted AND in_whole_hours(time_us);
BEGIN TRANSACTION;

CREATE OR REPLACE TEMP TABLE fingerprints AS
    SELECT hour_of(time_us) AS hour, sum(hash(seq, updated_at))::HUGEINT AS fingerprint
    FROM blips_in_whole_hours() WHERE getvariable('agent') IS NULL GROUP BY hour;

CREATE OR REPLACE TEMP TABLE stale_hours AS
    SELECT hour FROM (SELECT * FROM fingerprints EXCEPT SELECT * FROM analytics_term_hours)
    UNION
    SELECT hour FROM analytics_term_hours  -- hours whose last blip went
    WHERE getvariable('agent') IS NULL AND in_whole_hours(epoch_us(hour)) AND hour NOT IN (SELECT hour FROM fingerprints);

-- What to count now: the stale hours (their time span first, which lets the scan skip the rest), or the agent's blips.
CREATE OR REPLACE TEMP VIEW counting AS
    SELECT hour_of(time_us) AS hour, content FROM blips_in_whole_hours()
    WHERE CASE WHEN getvariable('agent') IS NULL
               THEN time_us >= (SELECT epoch_us(min(hour)) FROM stale_hours)
                    AND time_us < (SELECT epoch_us(max(hour)) + 3600000000 FROM stale_hours)
                    AND hour_of(time_us) IN (SELECT hour FROM stale_hours)
               ELSE did = chosen_agent_did() END;

-- Words per hour, grouped as written first: cleaning the distinct tokens is much cheaper than cleaning every one.
CREATE OR REPLACE TEMP TABLE counted AS
    SELECT hour, term, sum(uses)::BIGINT AS uses
    FROM (SELECT hour, regexp_replace(token, '^[^\pL\pN]+|[^\pL\pN]+$', '', 'g') AS term, uses
          FROM (SELECT hour, token, count(*) AS uses
                FROM (SELECT hour, unnest(string_split(replace(replace(lower(content), chr(10), ' '), chr(9), ' '), ' '))
                             AS token FROM counting)
                GROUP BY ALL))
    WHERE length(term) >= 3 AND NOT stopword(term)
    GROUP BY ALL;

DELETE FROM analytics_terms WHERE hour IN (SELECT hour FROM stale_hours);
DELETE FROM analytics_term_hours WHERE hour IN (SELECT hour FROM stale_hours);
INSERT INTO analytics_terms SELECT * FROM counted WHERE getvariable('agent') IS NULL;
INSERT INTO analytics_term_hours SELECT * FROM fingerprints WHERE hour IN (SELECT hour FROM stale_hours);

COMMIT;

SELECT period, term, uses, row_number() OVER (PARTITION BY period ORDER BY uses DESC, term) AS rank
FROM (
    SELECT date_trunc(coalesce(getvariable('bucket'), 'day'), hour) AS period, term, sum(uses)::BIGINT AS uses
    FROM (SELECT * FROM analytics_terms WHERE getvariable('agent') IS NULL AND in_whole_hours(epoch_us(hour))
          UNION ALL
          SELECT * FROM counted WHERE getvariable('agent') IS NOT NULL)
    GROUP BY ALL
)
QUALIFY rank <= coalesce(getvariable('top'), 10)
ORDER BY period, rank, term;
