-- prelude: the selection every report reads (run it first in the same session); it defines temporary macros only.
--
-- Variables, set with SET VARIABLE name = value; a variable left unset takes its default:
--   since, until  TIMESTAMPTZ (or text such as '2025-10-09'): blips and windows in [since, until); default all history
--   agents        LIST of STRUCT(name VARCHAR, did VARCHAR): the configured agents; default none
--   agent         an agent's name: each report keeps what concerns that agent; default every author
--   bucket        'hour', 'day' or 'week': the period of time series (UTC); default 'day'
--   top           how many rows a ranking keeps; default per report
-- A blip's time is the source clock (Jetstream time_us) of its latest operation, in UTC. Reports group by DID
-- first and put names on the groups last: joining names onto every blip would cost more than the report.

CREATE OR REPLACE TEMP MACRO in_range(time_us) AS
    time_us >= coalesce(epoch_us(getvariable('since')::TIMESTAMPTZ), 0)
    AND time_us < coalesce(epoch_us(getvariable('until')::TIMESTAMPTZ), 9223372036854775807);

CREATE OR REPLACE TEMP MACRO period_of(time_us) AS
    date_trunc(coalesce(getvariable('bucket'), 'day'), make_timestamp(time_us));

CREATE OR REPLACE TEMP MACRO agents() AS TABLE
    SELECT unnest(coalesce(getvariable('agents'), []::STRUCT(name VARCHAR, did VARCHAR)[]), recursive := true);

-- The DID of the agent `agent` names (NULL when unset or unknown).
CREATE OR REPLACE TEMP MACRO chosen_agent_did() AS (SELECT did FROM agents() WHERE name = getvariable('agent'));

-- Who a DID is: `agent` is the agent's name, `author` the agent's name or else the handle (reports fall back on the DID).
CREATE OR REPLACE TEMP MACRO authors() AS TABLE
    SELECT did, a.name AS agent, coalesce(a.name, i.handle) AS author
    FROM agents() a FULL JOIN identities i USING (did);

CREATE OR REPLACE TEMP MACRO blips_in_range() AS TABLE
    SELECT uri, did, time_us, content, reply_root_uri, reply_parent_uri FROM blips
    WHERE collection = 'stream.thought.blip' AND NOT deleted AND in_range(time_us);

CREATE OR REPLACE TEMP MACRO windows_in_range() AS TABLE
    SELECT * FROM windows
    WHERE in_range(epoch_us(created_at)) AND (getvariable('agent') IS NULL OR agent = getvariable('agent'));
