"""The DuckDB store. This is the only module that talks to DuckDB.

Sharing between processes: DuckDB lets one process at a time open a database file (a second one,
even read-only, gets "Could not set lock on file"). Ingest, dispatch, publish and analytics run as
separate processes, so every unit of work opens the file, does its work in one transaction and
closes it again ("short-lived connections"), and an open that finds the file locked retries with
jittered backoff for up to `lock_timeout` seconds. Ingest buffers in memory meanwhile and writes in
batches, so a reader holding the file for a while delays writes without losing anything; what is
not yet written is also not yet in the cursor, so even a crash only means a replay, which the
idempotent upserts absorb.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from blipflow.config import StoreConfig
from blipflow.model.blip import (
    CREATED_AT_PATTERN,
    ROW_COLUMNS,
    Blip,
    BlipRow,
    Candidate,
    Identity,
)
from blipflow.model.events import (
    CID_PATTERN,
    EARLIEST_DATE,
    LATEST_DATE,
    RECORD_URI_PATTERN,
)
from blipflow.model.ledger import Circuit, WindowRecord

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


def readable_date(moment: str) -> str:
    """SQL: the TIMESTAMPTZ `moment` when every reader can hold it (see events.py), else NULL."""
    earliest, latest = (f"TIMESTAMPTZ '{date.isoformat()}'" for date in (EARLIEST_DATE, LATEST_DATE))
    return f"CASE WHEN {moment} BETWEEN {earliest} AND {latest} THEN {moment} END"


def strong_ref(ref: str) -> str:
    """SQL: whether `ref`, a struct of JSON `uri` and `cid`, is a strong reference: the text at-uri of a record
    and the text of a cid (JSON strings, never a number or a list that would read as text)."""
    return (f"(json_type({ref}.uri) = 'VARCHAR' AND regexp_full_match({ref}.uri->>'$', '{RECORD_URI_PATTERN}') "
            f"AND json_type({ref}.cid) = 'VARCHAR' AND regexp_full_match({ref}.cid->>'$', '{CID_PATTERN}'))")


# What the store reads of an event and of its record, each parsed once (reading fields one by one with `->`
# parsed the record again for every one of them: most of the write's time). A field of another type reads as
# NULL where a struct is expected, and as its JSON text where text is: the patterns below refuse that text.
EVENT_FIELDS = ('{"did": "VARCHAR", "commit": {"rev": "VARCHAR", "operation": "VARCHAR", "collection": "VARCHAR", '
                '"rkey": "VARCHAR", "cid": "VARCHAR", "record": "JSON"}}')
STRONG_REF_FIELDS = '{"uri": "JSON", "cid": "JSON"}'
RECORD_FIELDS = (f'{{"content": "VARCHAR", "createdAt": "VARCHAR", '
                 f'"reply": {{"root": {STRONG_REF_FIELDS}, "parent": {STRONG_REF_FIELDS}}}}}')

# Later operations win; replaying an operation already applied changes nothing.
# Columns come out of the event JSON here, rather than in Python (off the GIL, so the socket is read
# meanwhile). A value of the wrong type or shape is stored as NULL, never as something readers trip on: a
# createdAt that is not a date every reader can hold (see blip.py), a reply reference that is not an at-uri
# with a cid (either part missing or malformed drops the reference; a reply that names no valid parent is
# just a blip).
UPSERT_BLIPS = f"""
INSERT INTO blips (uri, did, collection, rkey, cid, rev, time_us, operation, deleted, created_at, content,
                   reply_root_uri, reply_root_cid, reply_parent_uri, reply_parent_cid, record)
SELECT uri, did, c.collection, c.rkey, c.cid, c.rev, time_us, c.operation, c.operation = 'delete',
       {readable_date("moment")}, r.content,
       CASE WHEN root_ok THEN r.reply.root.uri->>'$' END, CASE WHEN root_ok THEN r.reply.root.cid->>'$' END,
       CASE WHEN parent_ok THEN r.reply.parent.uri->>'$' END, CASE WHEN parent_ok THEN r.reply.parent.cid->>'$' END,
       c.record
FROM (SELECT *, {strong_ref("r.reply.root")} AS root_ok, {strong_ref("r.reply.parent")} AS parent_ok,
             TRY_CAST(CASE WHEN regexp_full_match(r.createdAt, '{CREATED_AT_PATTERN}') THEN r.createdAt END
                      AS TIMESTAMPTZ) AS moment
      FROM (SELECT uri, time_us, e.did, e.commit AS c, from_json(e.commit.record, '{RECORD_FIELDS}') AS r
            FROM (SELECT uri, time_us, from_json(event, '{EVENT_FIELDS}') AS e FROM incoming)))
ON CONFLICT (uri) DO UPDATE SET
    cid = excluded.cid, rev = excluded.rev, time_us = excluded.time_us, operation = excluded.operation,
    deleted = excluded.deleted,
    created_at = CASE WHEN excluded.deleted THEN blips.created_at ELSE excluded.created_at END,
    content = excluded.content,
    reply_root_uri = excluded.reply_root_uri, reply_root_cid = excluded.reply_root_cid,
    reply_parent_uri = excluded.reply_parent_uri, reply_parent_cid = excluded.reply_parent_cid,
    record = excluded.record, updated_at = now()
WHERE excluded.time_us > blips.time_us
"""

# A blip an agent may be sent: a live blip with content (not another collection, not a tombstone).
CANDIDATE_BLIP = "b.collection = 'stream.thought.blip' AND NOT b.deleted AND b.content IS NOT NULL"

# The columns a `Blip` and a `dispatch.Window` are read from, in their field order. A store written before
# ingest checked dates may hold ones Python cannot (year 99999, say): those read as no date.
BLIP_FIELDS = (f"b.uri, b.did, i.handle, i.display_name, b.time_us, {readable_date('b.created_at')} AS created_at, "
               "b.content, b.reply_parent_uri")
WINDOW_FIELDS = "id, agent, state, size, sent_at, settled, retry_at"
WINDOW_RECORD_FIELDS = "id, agent, state, size, created_at, attempts, failures, error, retry_at"

LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


class StoreError(Exception):
    """The store cannot be used; the message names the file."""


class StoreBusy(StoreError):
    """Another process kept the store locked for longer than the lock timeout."""






@dataclass
class IngestBatch:
    """Everything one flush writes, atomically: blips, identity facts, counters and the cursor."""

    blips: Mapping[str, BlipRow] = field(default_factory=dict)
    handles: Mapping[str, str | None] = field(default_factory=dict)
    accounts: Mapping[str, tuple[bool, str | None]] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)
    cursor_key: str | None = None
    cursor: int | None = None
    newest_time_us: int | None = None  # the newest event's source time, and when it arrived (epoch seconds)
    newest_received_at: float | None = None


@dataclass(frozen=True)
class StoredOperation:
    """The operation on a blip that the store applied last, as the control plane's feed reads it back."""

    uri: str
    did: str
    time_us: int
    cid: str | None
    record: str | None  # the record's JSON; None for a deletion
    stored_at: datetime  # when the blip was first stored
    updated_at: datetime  # when this operation was (the start of the batch that wrote it)


class Store:
    @classmethod
    def from_config(cls, config: StoreConfig) -> Store:
        return cls(config.path, lock_timeout=config.lock_timeout)

    @classmethod
    def existing(cls, config: StoreConfig) -> Store:
        """The configured store, to read: reading must not create an empty file where none was."""
        if not config.path.exists():
            raise StoreError(f"store {config.path}: no such file yet (run `blipflow run` first)")
        return cls.from_config(config)

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._schema_ready = False
        self._sessions: dict[int, duckdb.DuckDBPyConnection] = {}  # thread → its session's connection
        # Stores of other files may be attached to the process's DuckDB at the same time.
        self.alias = "store_" + hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
        self._turns = process_lock(self.path)  # shared by every Store of this file in the process

    # -- connections -----------------------------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work; waits while another process holds the file.

        Within a process, units of work take turns too: DuckDB refuses a second concurrent open of
        the same file ("Unique file handle conflict") and fails concurrent updates of one row.
        Inside `session()`, the session's connection serves instead of a new one."""
        current = self._sessions.get(threading.get_ident())
        if current is not None:
            yield current
            return
        with self._turns:
            connection = self._attach()
            try:
                if not self._schema_ready:
                    connection.execute(SCHEMA)
                    self._schema_ready = True
                yield connection
            finally:
                self._detach(connection)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; inside `session()` it is part of the session's transaction."""
        if threading.get_ident() in self._sessions:
            with self.connect() as connection:
                yield connection
            return
        with self.connect() as connection:
            connection.begin()
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    @contextmanager
    def session(self) -> Iterator[None]:
        """Several store calls of this thread as one open of the file and one transaction.

        Opening the file costs ~15-25 ms, and each open is a chance for another process to wait on
        the lock, so a step that reads and writes several times (planning a round, taking a window
        off to send it) does it all in one."""
        with self.transaction() as connection:
            self._sessions[threading.get_ident()] = connection
            try:
                yield
            finally:
                del self._sessions[threading.get_ident()]

    def version(self) -> tuple:
        """Changes whenever any process commits to the file (DuckDB appends each commit to the
        write-ahead log, and a checkpoint rewrites the file): pollers compare it to skip a round
        without taking the lock that ingest needs."""
        marks = []
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                marks.append(None)
            else:
                marks.append((stat.st_mtime_ns, stat.st_size))
        return tuple(marks)

    def _attach(self) -> duckdb.DuckDBPyConnection:
        """The file attached to this process's DuckDB, as the current database of a new connection."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"store {self.path}: cannot create its folder: {error.strerror}") from None
        connection = host().cursor()
        deadline = time.monotonic() + self.lock_timeout
        pause = 0.002
        while True:
            try:
                connection.execute(f"ATTACH {sql_string(str(self.path))} AS {self.alias}")
                connection.execute(f"USE {self.alias}")
                return connection
            except duckdb.IOException as error:
                message = str(error)
                if "Could not set lock" not in message:
                    connection.close()
                    raise StoreError(f"store {self.path}: {message}") from None
                if time.monotonic() >= deadline:
                    connection.close()
                    holder = LOCK_HOLDER.search(message)
                    who = f"process {holder.group(2)} ({holder.group(1)})" if holder else "another process"
                    raise StoreBusy(
                        f"store {self.path}: locked by {who} for more than {self.lock_timeout:g} s"
                    ) from None
            except duckdb.Error as error:
                connection.close()
                raise StoreError(f"store {self.path}: {error}") from None
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.05)

    def _detach(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Detaching writes a checkpoint when one is due and releases the file, like closing it."""
        try:
            connection.execute("USE memory")
            connection.execute(f"DETACH {self.alias}")
        finally:
            connection.close()

    # -- ingest ----------------------------------------------------------------------------------

    def apply(self, batch: IngestBatch) -> None:
        with self.transaction() as db:
            if batch.blips:
                with incoming(db, BLIP_COLUMNS, batch.blips.values()):
                    db.execute(UPSERT_BLIPS)
            if batch.handles:
                with incoming(db, {"did": pa.string(), "handle": pa.string()}, batch.handles.items()):
                    db.execute(
                        """INSERT INTO identities (did, handle) SELECT did, handle FROM incoming
                           ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, updated_at = now()"""
                    )
            if batch.accounts:
                rows = ((did, active, status) for did, (active, status) in batch.accounts.items())
                with incoming(db, ACCOUNT_COLUMNS, rows):
                    db.execute(
                        """INSERT INTO identities (did, active, status) SELECT did, active, status FROM incoming
                           ON CONFLICT (did) DO UPDATE SET active = excluded.active, status = excluded.status,
                           updated_at = now()"""
                    )
            if batch.counters:
                add_counters(db, batch.counters)
            if batch.cursor_key is not None and batch.cursor is not None:
                received = None if batch.newest_received_at is None else datetime.fromtimestamp(
                    batch.newest_received_at, timezone.utc)
                db.execute(
                    """INSERT INTO cursors (source, cursor, newest_time_us, newest_received_at) VALUES (?, ?, ?, ?)
                       ON CONFLICT (source) DO UPDATE SET cursor = greatest(cursors.cursor, excluded.cursor),
                       newest_time_us = coalesce(excluded.newest_time_us, cursors.newest_time_us),
                       newest_received_at = coalesce(excluded.newest_received_at, cursors.newest_received_at),
                       updated_at = now()""",
                    [batch.cursor_key, batch.cursor, batch.newest_time_us, received],
                )

    def cursor(self, source: str) -> int | None:
        with self.connect() as db:
            row = db.execute("SELECT cursor FROM cursors WHERE source = ?", [source]).fetchone()
        return row[0] if row else None

    def counters(self) -> dict[str, int]:
        with self.connect() as db:
            return dict(db.execute("SELECT name, value FROM counters ORDER BY name").fetchall())

    def add_counters(self, counters: Mapping[str, int]) -> None:
        with self.transaction() as db:
            add_counters(db, counters)

    # -- reading ---------------------------------------------------------------------------------

    def latest_blips(self, limit: int = 20, dids: list[str] | None = None) -> list[Blip]:
        """The newest blips (not deleted), oldest of them first, as a chat reads."""
        where = "NOT b.deleted AND b.content IS NOT NULL"
        params: list[object] = []
        if dids:
            where += " AND b.did IN (SELECT unnest(?))"
            params.append(dids)
        rows = self.query_all(
            f"""SELECT * FROM (
                    SELECT {BLIP_FIELDS} FROM blips b LEFT JOIN identities i USING (did)
                    WHERE {where} ORDER BY b.time_us DESC LIMIT ?)
                ORDER BY time_us""",
            [*params, limit],
        )
        return [Blip(*row) for row in rows]

    def blips_written_since(self, since: datetime, after: tuple[datetime, str] | None,
                            limit: int) -> list[StoredOperation]:
        """Blips written (stored or changed) at or after `since`, in the order they were written, a page of
        `limit` at a time: `after` is the (updated_at, uri) of the last one of the page before."""
        after_at, after_uri = after or (since, "")
        rows = self.query_all(
            """SELECT uri, did, time_us, cid, CASE WHEN NOT deleted THEN record::VARCHAR END, ingested_at, updated_at
               FROM blips WHERE collection = 'stream.thought.blip' AND updated_at >= $since
                 AND (updated_at, uri) > ($after_at, $after_uri)
               ORDER BY updated_at, uri LIMIT $limit""",
            {"since": since, "after_at": after_at, "after_uri": after_uri, "limit": limit})
        return [StoredOperation(*row) for row in rows]

    def blip_count(self) -> int:
        return self.query_all("SELECT count(*) FROM blips WHERE NOT deleted")[0][0]

    def query_all(self, sql: str, params: list[object] | None = None) -> list[tuple]:
        with self.connect() as db:
            return db.execute(sql, params or []).fetchall()

    # -- the delivery ledger ---------------------------------------------------------------------

    def join(self, agent: str, stored_since: datetime) -> None:
        """A newly configured agent is sent only what was stored from `stored_since` on, not the whole
        history; an agent that has joined before keeps its place."""
        with self.transaction() as db:
            db.execute(
                """INSERT INTO agent_progress (agent, decided_through)
                   SELECT ?, coalesce(max(seq), 0) FROM blips WHERE ingested_at < ?
                   ON CONFLICT (agent) DO NOTHING""",
                [agent, stored_since],
            )

    def undelivered(self, agent: str, agent_dids: list[str], limit: int) -> list[Candidate]:
        """Blips not yet decided for `agent`, oldest first, each with the length of the agent-only reply
        chain it ends (agents are the authors in `agent_dids`)."""
        rows = self.query_all(
            f"""
            WITH RECURSIVE open AS (
                SELECT b.uri, b.did, b.ingested_at, b.time_us, b.reply_parent_uri FROM blips b
                WHERE b.seq > coalesce((SELECT decided_through FROM agent_progress WHERE agent = $agent), 0)
                  AND {CANDIDATE_BLIP}
                  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.agent = $agent AND d.blip_uri = b.uri)
                ORDER BY b.time_us LIMIT $limit
            ),
            chain(uri, parent, depth) AS (
                SELECT uri, reply_parent_uri, 1 FROM open WHERE did IN (SELECT unnest($agents))
                UNION ALL
                SELECT chain.uri, parent.reply_parent_uri, chain.depth + 1
                FROM chain JOIN blips parent ON parent.uri = chain.parent
                WHERE parent.did IN (SELECT unnest($agents)) AND chain.depth < $deepest
            )
            SELECT open.uri, open.did, open.ingested_at, coalesce(max(chain.depth), 0)
            FROM open LEFT JOIN chain USING (uri)
            GROUP BY open.uri, open.did, open.ingested_at, open.time_us
            ORDER BY open.time_us
            """,
            {"agent": agent, "agents": agent_dids, "limit": limit, "deepest": MAX_CHAIN_DEPTH_SEEN},
        )
        return [Candidate(*row) for row in rows]

    def decide(self, agent: str, skips: Mapping[str, str], window: list[str]) -> str | None:
        """Record skipped blips and, if `window` is not empty, open a pending window for it; one
        transaction, so a blip is never in two windows. Returns the window's id."""
        window_id = str(uuid.uuid4()) if window else None
        with self.transaction() as db:
            if skips:
                rows = [(agent, uri, None, reason) for uri, reason in skips.items()]
                with incoming(db, DELIVERY_COLUMNS, rows):
                    db.execute("INSERT INTO deliveries (agent, blip_uri, window_id, skip_reason) SELECT * FROM incoming")
            if window_id is not None:
                db.execute("INSERT INTO windows (id, agent, state, size) VALUES (?, ?, 'pending', ?)",
                           [window_id, agent, len(window)])
                with incoming(db, DELIVERY_COLUMNS, [(agent, uri, window_id, None) for uri in window]):
                    db.execute("INSERT INTO deliveries (agent, blip_uri, window_id, skip_reason) SELECT * FROM incoming")
            db.execute(
                f"""INSERT INTO agent_progress (agent, decided_through)
                    SELECT $agent, coalesce(
                        (SELECT min(b.seq) - 1 FROM blips b
                         WHERE b.seq > coalesce((SELECT decided_through FROM agent_progress WHERE agent = $agent), 0)
                           AND {CANDIDATE_BLIP}
                           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.agent = $agent AND d.blip_uri = b.uri)),
                        (SELECT max(seq) FROM blips), 0)
                    ON CONFLICT (agent) DO UPDATE SET decided_through = excluded.decided_through""",
                {"agent": agent},
            )
        return window_id

    def window_blips(self, window_id: str) -> list[Blip]:
        rows = self.query_all(
            f"""SELECT {BLIP_FIELDS}
               FROM deliveries d JOIN blips b ON b.uri = d.blip_uri LEFT JOIN identities i ON i.did = b.did
               WHERE d.window_id = ? ORDER BY b.time_us""",
            [window_id],
        )
        return [Blip(*row) for row in rows]

    def window(self, window_id: str) -> tuple:
        """(id, agent, state, size, sent_at, settled, retry_at) of one window, as it is now."""
        return self.query_all(f"SELECT {WINDOW_FIELDS} FROM windows WHERE id = ?", [window_id])[0]

    def windows_in(self, states: list[str], agent: str | None = None) -> list[tuple]:
        """(id, agent, state, size, sent_at, settled, retry_at) of the windows in `states`, oldest first."""
        return self.query_all(
            f"""SELECT {WINDOW_FIELDS} FROM windows WHERE state IN (SELECT unnest($states))
               AND ($agent IS NULL OR agent = $agent) ORDER BY created_at""",
            {"states": states, "agent": agent},
        )

    def mark_sending(self, window_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE windows SET state = 'sending', sent_at = now() WHERE id = ?", [window_id])

    def finish_window(self, window_id: str, agent: str, replies: list[str], letta_ms: float) -> None:
        """The agent answered (or chose silence): its replies go to the outbox with the window's outcome."""
        with self.transaction() as db:
            for position, content in enumerate(replies):
                db.execute("INSERT INTO replies (id, window_id, agent, position, content) VALUES (?, ?, ?, ?, ?)",
                           [f"{window_id}:{position}", window_id, agent, position, content])
            db.execute("""UPDATE windows SET state = ?, finished_at = now(), letta_ms = ?, error = NULL,
                          attempts = attempts + 1, retry_at = NULL WHERE id = ?""",
                       ["answered" if replies else "silent", letta_ms, window_id])

    def fail_window(self, window_id: str, error: str, *, settled: bool, retry_at: datetime | None = None,
                    strike: bool = False) -> int:
        """A failed attempt: the window stays in the ledger to be sent again, not before `retry_at`. A
        `strike` is a failure of the window's own making; returns how many it has had."""
        with self.transaction() as db:
            return db.execute(
                """UPDATE windows SET state = 'failed', error = ?, settled = ?, retry_at = ?, attempts = attempts + 1,
                   failures = failures + 1, strikes = strikes + ? WHERE id = ? RETURNING strikes""",
                [error, settled, retry_at, int(strike), window_id],
            ).fetchone()[0]

    def clear_retry_at(self, window_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE windows SET retry_at = NULL WHERE id = ?", [window_id])

    def quarantine_window(self, window_id: str) -> None:
        """Set a failed window aside: its agent goes on with the next, and a person decides (retry or drop)."""
        with self.transaction() as db:
            db.execute("UPDATE windows SET state = 'quarantined', retry_at = NULL, finished_at = now() WHERE id = ?",
                       [window_id])

    def window_records(self, states: list[str]) -> list[WindowRecord]:
        """The windows in `states`, oldest first, as a person reads them."""
        rows = self.query_all(
            f"""SELECT {WINDOW_RECORD_FIELDS} FROM windows WHERE state IN (SELECT unnest(?))
                ORDER BY created_at""", [states])
        return [WindowRecord(*row) for row in rows]

    def retry_or_drop_window(self, window_id: str, state: str) -> WindowRecord | None:
        """A failed or quarantined window put into `state` by hand: 'failed' to send it again now (with
        dispatch.quarantine_after attempts anew), 'dropped' never to send it. Returns the window as it was
        (one in another state is left alone), None when there is no such window."""
        with self.transaction() as db:
            row = db.execute(f"SELECT {WINDOW_RECORD_FIELDS} FROM windows WHERE id = ?", [window_id]).fetchone()
            if row is None:
                return None
            record = WindowRecord(*row)
            if record.state in ("failed", "quarantined"):
                db.execute("UPDATE windows SET state = ?, retry_at = NULL, strikes = 0 WHERE id = ?", [state, window_id])
            return record

    def save_circuit(self, agent: str, state: str, failures: int, opened_at: datetime | None,
                     reason: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                """INSERT INTO circuits (agent, state, failures, opened_at, reason) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (agent) DO UPDATE SET state = excluded.state, failures = excluded.failures,
                   opened_at = excluded.opened_at, reason = excluded.reason, updated_at = now()""",
                [agent, state, failures, opened_at, reason],
            )

    def circuits(self) -> dict[str, Circuit]:
        rows = self.query_all("SELECT agent, state, failures, opened_at, reason FROM circuits")
        return {agent: Circuit(*fields) for agent, *fields in rows}

    def status_figures(self) -> dict[str, list[tuple]]:
        """The raw figures behind `blipflow status`, read in one open of the file."""
        with self.session():
            return {
                "blips": self.query_all(
                    """SELECT count(*) FILTER (NOT deleted),
                              count(*) FILTER (ingested_at >= now() - INTERVAL 5 MINUTE),
                              count(*) FILTER (ingested_at >= now() - INTERVAL 1 HOUR),
                              max(ingested_at)
                       FROM blips"""),
                "cursors": self.query_all(
                    """SELECT source, cursor, updated_at, newest_received_at,
                              greatest(0, epoch_us(newest_received_at) - newest_time_us) / 1e6,
                              greatest(0, epoch_us(now()) - epoch_us(newest_received_at)) / 1e6
                       FROM cursors ORDER BY newest_received_at DESC NULLS LAST, source"""),
                "counters": self.query_all("SELECT name, value FROM counters ORDER BY name"),
            }

    def replies_since(self, agent: str, since: datetime) -> int:
        return self.query_all("SELECT count(*) FROM replies WHERE agent = ? AND created_at >= ?", [agent, since])[0][0]

    # -- the outbox ------------------------------------------------------------------------------

    def outbox(self, limit: int, reply_id: str | None = None) -> list[tuple]:
        """Queued replies, oldest first (or the one `reply_id`, whatever its state), each as
        (id, agent, position, content, created_us, state, answers, posted): `answers` are the window's
        blips, oldest first, as {uri, cid, root_uri, root_cid}; `posted` the parts already on the PDS,
        in order, as {uri, cid}."""
        return self.query_all(
            """
            SELECT r.id, r.agent, r.position, r.content, epoch_us(r.created_at), r.state,
                   coalesce((SELECT list({'uri': b.uri, 'cid': b.cid, 'root_uri': b.reply_root_uri,
                                          'root_cid': b.reply_root_cid} ORDER BY b.time_us)
                             FROM deliveries d JOIN blips b ON b.uri = d.blip_uri
                             WHERE d.window_id = r.window_id AND b.cid IS NOT NULL), []),
                   coalesce((SELECT list({'uri': p.uri, 'cid': p.cid} ORDER BY p.part)
                             FROM posts p WHERE p.reply_id = r.id), [])
            FROM replies r
            WHERE CASE WHEN $reply_id IS NULL THEN r.state = 'queued' ELSE r.id = $reply_id END
            ORDER BY r.created_at, r.position
            LIMIT $limit
            """,
            {"reply_id": reply_id, "limit": limit},
        )

    def record_post(self, reply_id: str, part: int, account: str, uri: str, cid: str, *, last: bool) -> None:
        """One part of a reply is on the PDS; after its last part the reply is posted."""
        with self.transaction() as db:
            db.execute("""INSERT INTO posts (reply_id, part, account, uri, cid) VALUES (?, ?, ?, ?, ?)
                          ON CONFLICT (reply_id, part) DO NOTHING""", [reply_id, part, account, uri, cid])
            if last:
                db.execute("UPDATE replies SET state = 'posted', error = NULL WHERE id = ?", [reply_id])

    def fail_reply(self, reply_id: str, error: str) -> None:
        """A reply that can never be posted as it is (the PDS rejected it); it leaves the queue."""
        with self.transaction() as db:
            db.execute("UPDATE replies SET state = 'failed', error = ? WHERE id = ?", [error, reply_id])

    def posts_since(self, account: str, since: datetime) -> int:
        return self.query_all("SELECT count(*) FROM posts WHERE account = ? AND posted_at >= ?", [account, since])[0][0]

    # -- the previous layout's ledger, for the control plane to take over ------------------------

    def ledger_table(self, table: str) -> pa.Table:
        """Every row of one of the ledger's tables as this file kept them before the control plane did
        (windows, deliveries, agent_progress, circuits, replies, posts), its columns by name."""
        if table not in LEDGER_TABLES:
            raise ValueError(f"{table} is not one of the ledger's tables {LEDGER_TABLES}")
        with self.connect() as db:
            return db.sql(f"SELECT * FROM {table}").to_arrow_table()

    def blip_operations(self, batch: int) -> Iterator[pa.RecordBatch]:
        """Each blip's last stored operation, in the order blips first arrived here (seq), in batches of
        at most `batch`: uri, did, time_us, cid, deleted, record (JSON text, NULL when deleted), stored_at."""
        with self.connect() as db:
            reader = db.execute(
                """SELECT uri, did, time_us, cid, deleted, CASE WHEN NOT deleted THEN record::VARCHAR END AS record,
                           ingested_at AS stored_at
                    FROM blips b WHERE b.collection = 'stream.thought.blip' ORDER BY seq""").to_arrow_reader(batch)
            yield from reader

    def last_blip_through(self, seq: int) -> str | None:
        """The uri of the blip that arrived last among those with seq <= `seq` (None: no such blip)."""
        rows = self.query_all("SELECT uri FROM blips WHERE seq <= ? ORDER BY seq DESC LIMIT 1", [seq])
        return rows[0][0] if rows else None

    # -- identities ------------------------------------------------------------------------------

    def identities(self, dids: list[str]) -> dict[str, Identity]:
        rows = self.query_all(
            "SELECT did, handle, display_name, pds, fetched_at FROM identities WHERE did IN (SELECT unnest(?))",
            [dids],
        )
        return {row[0]: Identity(*row) for row in rows}

    def save_identities(self, identities: list[Identity]) -> None:
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO identities (did, handle, display_name, pds, fetched_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, display_name = excluded.display_name,
                   pds = excluded.pds, fetched_at = excluded.fetched_at, updated_at = now()""",
                [(i.did, i.handle, i.display_name, i.pds, i.fetched_at or now()) for i in identities],
            )

    # -- analytics -------------------------------------------------------------------------------

    def analytics_table(self, name: str, script: str, variables: Mapping[str, object],
                        tables: Mapping[str, pa.Table] | None = None) -> pa.Table:
        """The result of the SQL script `name`'s last statement, in one short connection, with `variables` set
        for the script's getvariable() calls (as `SET VARIABLE` would in the DuckDB CLI) and `tables` (from
        elsewhere: the control plane's) there to read by their names. A script DuckDB cannot run is a
        StoreError naming it, in one line."""
        with self.connect() as db:
            for variable, value in variables.items():
                db.execute(f"SET VARIABLE {variable} = ?", [value])
            for table_name, table in (tables or {}).items():
                db.register(table_name, table)  # gone with the connection
            try:
                return db.sql(script).to_arrow_table()
            except duckdb.Error as error:
                raise StoreError(f"store {self.path}: {name}: {str(error).splitlines()[0]}") from None

    # -- maintenance -----------------------------------------------------------------------------

    def expired_identities(self, fetched_before: datetime, limit: int) -> list[str]:
        """DIDs whose identity was last resolved before `fetched_before`, or never, the longest-waiting first."""
        rows = self.query_all(
            """SELECT did FROM identities WHERE fetched_at IS NULL OR fetched_at < ?
               ORDER BY fetched_at NULLS FIRST, did LIMIT ?""",
            [fetched_before, limit],
        )
        return [did for (did,) in rows]

    def checkpoint(self) -> tuple[int, int]:
        """Write what the write-ahead log holds into the file now; returns (bytes in use, bytes free) in it."""
        with self.connect() as db:
            db.execute(f"CHECKPOINT {self.alias}")
            return db.execute(
                """SELECT used_blocks * block_size, free_blocks * block_size FROM pragma_database_size()
                   WHERE database_name = ?""",
                [self.alias],
            ).fetchone()


LEDGER_TABLES = ("windows", "deliveries", "agent_progress", "circuits", "replies", "posts")
BLIP_COLUMNS = dict(zip(ROW_COLUMNS, (pa.string(), pa.int64(), pa.string())))
ACCOUNT_COLUMNS = {"did": pa.string(), "active": pa.bool_(), "status": pa.string()}
DELIVERY_COLUMNS = {"agent": pa.string(), "blip_uri": pa.string(), "window_id": pa.string(), "skip_reason": pa.string()}
# Chains are followed only this far back; the policy's limits are far below it.
MAX_CHAIN_DEPTH_SEEN = 32


@contextmanager
def incoming(
    db: duckdb.DuckDBPyConnection, columns: Mapping[str, pa.DataType], rows: Iterable[tuple]
) -> Iterator[None]:
    """Rows as the view `incoming`, loaded column-wise: DuckDB takes Arrow ~50x faster than row inserts."""
    values = list(zip(*rows)) or [[] for _ in columns]
    table = pa.table({name: pa.array(column, type=kind) for (name, kind), column in zip(columns.items(), values)})
    db.register("incoming", table)
    yield
    db.unregister("incoming")  # not on failure: the aborted transaction refuses it, and the connection closes


_host: duckdb.DuckDBPyConnection | None = None
_host_guard = threading.Lock()


def host() -> duckdb.DuckDBPyConnection:
    """The process's one in-memory DuckDB, into which store files are attached for each unit of work:
    attaching a file takes ~2 ms where starting a DuckDB for it takes ~20 ms (measured here), and
    detaching releases the file to other processes just as closing does."""
    global _host
    with _host_guard:
        if _host is None:
            _host = duckdb.connect(":memory:")
            atexit.register(close_host)
        return _host


def close_host() -> None:
    """Left to the interpreter's teardown, DuckDB's bindings report the connection as leaked."""
    global _host
    with _host_guard:
        if _host is not None:
            _host.close()
            _host = None


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_process_locks: dict[Path, threading.RLock] = {}
_process_locks_guard = threading.Lock()


def process_lock(path: Path) -> threading.RLock:
    with _process_locks_guard:
        return _process_locks.setdefault(path.resolve(), threading.RLock())


def add_counters(db: duckdb.DuckDBPyConnection, counters: Mapping[str, int]) -> None:
    # One statement for all of them: DuckDB plans each statement anew, a few ms apiece.
    db.execute(
        """INSERT INTO counters (name, value) SELECT unnest($names), unnest($values)
           ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value""",
        {"names": list(counters), "values": list(counters.values())},
    )


def now() -> datetime:
    return datetime.now(timezone.utc)
