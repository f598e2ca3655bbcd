"""The DuckDB history's tables, created or brought up to date whenever a process first opens the file.

The delivery ledger's tables (windows, deliveries, agent_progress, circuits, replies, posts) are the
previous layout's: dispatch and publish keep them in the control plane now. A store written before keeps
them, and the control plane takes them over once (`blipflow.operations.takeover`); a new store keeps
them empty, so that one reading of every store serves.
"""

from __future__ import annotations

LEDGER_TABLES = ("windows", "deliveries", "agent_progress", "circuits", "replies", "posts")

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS blip_seq;
CREATE TABLE IF NOT EXISTS blips (
    uri VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('blip_seq'),  -- order of first arrival here
    did VARCHAR NOT NULL,
    collection VARCHAR NOT NULL,
    rkey VARCHAR NOT NULL,
    cid VARCHAR,
    rev VARCHAR,
    time_us BIGINT NOT NULL,          -- source clock of the operation last applied
    operation VARCHAR NOT NULL,       -- create | update | delete
    deleted BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ,           -- the author's createdAt; NULL when it is not a date
    content VARCHAR USING COMPRESSION zstd,
    reply_root_uri VARCHAR,
    reply_root_cid VARCHAR,
    reply_parent_uri VARCHAR,
    reply_parent_cid VARCHAR,
    record JSON USING COMPRESSION zstd,
    ingested_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS identities (
    did VARCHAR PRIMARY KEY,
    handle VARCHAR,
    display_name VARCHAR,
    pds VARCHAR,
    active BOOLEAN,
    status VARCHAR,
    fetched_at TIMESTAMPTZ,           -- when handle and display name were last resolved (TTL)
    updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS cursors (
    source VARCHAR PRIMARY KEY,
    cursor BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
-- The newest event a source handed over: its own time and when it arrived (their difference is the lag).
ALTER TABLE cursors ADD COLUMN IF NOT EXISTS newest_time_us BIGINT;
ALTER TABLE cursors ADD COLUMN IF NOT EXISTS newest_received_at TIMESTAMPTZ;
CREATE TABLE IF NOT EXISTS counters (
    name VARCHAR PRIMARY KEY,
    value BIGINT NOT NULL
);
-- The delivery ledger: every (agent, blip) is decided once, either sent in exactly one window or skipped.
CREATE TABLE IF NOT EXISTS windows (
    id VARCHAR PRIMARY KEY,
    agent VARCHAR NOT NULL,
    state VARCHAR NOT NULL,           -- pending | sending | answered | silent | failed | quarantined | dropped
    size INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    sent_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    attempts INTEGER NOT NULL DEFAULT 0,  -- attempts that ended (answered, silent, recovered or failed)
    error VARCHAR,
    settled BOOLEAN,                  -- for a failure: Letta answered it (false: a timeout, it may go on)
    letta_ms DOUBLE
);
CREATE TABLE IF NOT EXISTS deliveries (
    agent VARCHAR NOT NULL,
    blip_uri VARCHAR NOT NULL,
    window_id VARCHAR,                -- NULL when the blip is never sent to this agent
    skip_reason VARCHAR,
    decided_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (agent, blip_uri)
);
-- How far each agent's decisions reach: every candidate blip with seq <= decided_through is decided for
-- it, so finding its undecided blips never scans the whole history.
CREATE TABLE IF NOT EXISTS agent_progress (
    agent VARCHAR PRIMARY KEY,
    decided_through BIGINT NOT NULL
);
-- Each agent's circuit breaker as dispatch last left it, for `blipflow status` and the next dispatch process.
CREATE TABLE IF NOT EXISTS circuits (
    agent VARCHAR PRIMARY KEY,
    state VARCHAR NOT NULL,           -- closed | open | half_open
    failures INTEGER NOT NULL,        -- failed calls in a row
    opened_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
-- The outbox publish reads; a reply answers the blips of its window.
CREATE TABLE IF NOT EXISTS replies (
    id VARCHAR PRIMARY KEY,
    window_id VARCHAR NOT NULL,
    agent VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    content VARCHAR NOT NULL,
    state VARCHAR NOT NULL DEFAULT 'queued',
    created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
-- The outbox as publish keeps it: a reply is queued, then posted (every part on the PDS) or failed.
ALTER TABLE replies ADD COLUMN IF NOT EXISTS error VARCHAR;
-- Each attempt's outcome, counted once: what logs, `blipflow status` and the errors report all count.
ALTER TABLE windows ADD COLUMN IF NOT EXISTS failures INTEGER DEFAULT 0;   -- attempts that failed
-- Failed attempts of the window's own making (a bug, data the code cannot handle, a request Letta
-- refuses) since it was opened or retried by hand; at dispatch.quarantine_after it is quarantined.
ALTER TABLE windows ADD COLUMN IF NOT EXISTS strikes INTEGER DEFAULT 0;
ALTER TABLE windows ADD COLUMN IF NOT EXISTS retry_at TIMESTAMPTZ;         -- a failed window waits until then
ALTER TABLE circuits ADD COLUMN IF NOT EXISTS reason VARCHAR;              -- the failure that opened it
-- Each blip a reply went out as (a long reply is a series of parts), with the account that posted it.
CREATE TABLE IF NOT EXISTS posts (
    reply_id VARCHAR NOT NULL,
    part INTEGER NOT NULL,
    account VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    cid VARCHAR NOT NULL,
    posted_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (reply_id, part)
);
"""
