"""The DuckDB history store: the blips ingest buffers, identities, cursors and counters, for analytics to scan.

How processes share its file (short-lived connections, and the one long-running holder) is
`connections.StoreFile`'s to say; this module is what is read and written in it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import accumulate

import duckdb
import pyarrow as pa

from blipflow.config import StoreConfig
from blipflow.model.blip import ROW_COLUMNS, Blip, BlipRow, Identity
from blipflow.store.connections import StoreBusy, StoreError, StoreFile, begun
from blipflow.store.statements import (
    BLIP_FIELDS,
    INSERT_CREATED_BLIPS,
    RECORD_AS_SENT,
    UPSERT_BLIPS,
    UPSERT_CHANGED_BLIPS,
)

__all__ = ["IngestBatch", "Store", "StoreBusy", "StoreError", "StoredOperation"]  # the errors, where users look


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


class Store(StoreFile):
    @classmethod
    def from_config(cls, config: StoreConfig) -> Store:
        return cls(config.path, lock_timeout=config.lock_timeout)

    @classmethod
    def existing(cls, config: StoreConfig) -> Store:
        """The configured store, to read: reading must not create an empty file where none was."""
        if not config.path.exists():
            raise StoreError(f"store {config.path}: no such file yet (run `blipflow run` first)")
        return cls.from_config(config)

    # -- ingest ----------------------------------------------------------------------------------

    def apply(self, batch: IngestBatch) -> None:
        """The batch in one transaction. Its creates go in as plain inserts, which cost a third of upserts;
        should one of them be stored already (a replay after a restart), the transaction is rolled back and
        the batch written again as upserts. (Inside a session, whose transaction cannot start over, as upserts.)"""
        if not batch.blips or self.in_session():
            with self.transaction() as db:
                write(db, batch, creates_are_new=False)
            return
        with self.connect() as db:
            try:
                with begun(db):
                    write(db, batch, creates_are_new=True)
                return
            except duckdb.ConstraintException:
                pass
            with begun(db):
                write(db, batch, creates_are_new=False)

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
            f"""SELECT uri, did, time_us, cid, ({RECORD_AS_SENT})::VARCHAR, ingested_at, updated_at
               FROM blips b WHERE collection = 'stream.thought.blip' AND updated_at >= $since
                 AND (updated_at, uri) > ($after_at, $after_uri)
               ORDER BY updated_at, uri LIMIT $limit""",
            {"since": since, "after_at": after_at, "after_uri": after_uri, "limit": limit})
        return [StoredOperation(*row) for row in rows]

    def blip_count(self) -> int:
        return self.query_all("SELECT count(*) FROM blips WHERE NOT deleted")[0][0]

    def query_all(self, sql: str, params: list[object] | None = None) -> list[tuple]:
        with self.connect() as db:
            return db.execute(sql, params or []).fetchall()

    # -- identities ------------------------------------------------------------------------------

    def identities(self, dids: list[str]) -> dict[str, Identity]:
        rows = self.query_all(
            "SELECT did, handle, display_name, pds, fetched_at FROM identities WHERE did IN (SELECT unnest(?))",
            [dids],
        )
        return {row[0]: Identity(*row) for row in rows}

    def save_identities(self, identities: list[Identity], *, only_newer: bool = False) -> None:
        """Keep resolved identities; `only_newer`: not over one resolved later than it (when they come from
        another cache, the control plane's)."""
        if not identities:
            return  # DuckDB refuses an executemany of nothing
        newer = " WHERE identities.fetched_at IS NULL OR excluded.fetched_at > identities.fetched_at" if only_newer else ""
        with self.transaction() as db:
            db.executemany(
                """INSERT INTO identities (did, handle, display_name, pds, fetched_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, display_name = excluded.display_name,
                   pds = excluded.pds, fetched_at = excluded.fetched_at, updated_at = now()""" + newer,
                [(i.did, i.handle, i.display_name, i.pds, i.fetched_at or now()) for i in identities],
            )

    # -- analytics -------------------------------------------------------------------------------

    def analytics_table(self, name: str, script: str, variables: Mapping[str, object]) -> pa.Table:
        """The result of the SQL script `name`'s last statement, in one short connection, with `variables` set
        for the script's getvariable() calls (as `SET VARIABLE` would in the DuckDB CLI). A script DuckDB
        cannot run is a StoreError naming it, in one line."""
        with self.connect() as db:
            for variable, value in variables.items():
                db.execute(f"SET VARIABLE {variable} = ?", [value])
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


# A column handed over as UTF-8 bytes and loaded as text (`utf8_array`): a row's event, its JSON as received.
UTF8_BYTES = pa.large_binary()
BLIP_COLUMNS = dict(zip(ROW_COLUMNS, (pa.string(), pa.int64(), pa.string(), UTF8_BYTES)))
ACCOUNT_COLUMNS = {"did": pa.string(), "active": pa.bool_(), "status": pa.string()}


@contextmanager
def incoming(
    db: duckdb.DuckDBPyConnection, columns: Mapping[str, pa.DataType], rows: Iterable[tuple]
) -> Iterator[None]:
    """Rows as the view `incoming`, loaded column-wise: DuckDB takes Arrow ~50x faster than row inserts."""
    values = list(zip(*rows)) or [[] for _ in columns]
    table = pa.table({name: utf8_array(column) if kind == UTF8_BYTES else pa.array(column, type=kind)
                      for (name, kind), column in zip(columns.items(), values)})
    db.register("incoming", table)
    yield
    # Not on failure: the aborted transaction refuses it, and either the connection closes or, after the
    # rollback, the next `incoming` replaces it.
    db.unregister("incoming")


def utf8_array(texts: Sequence[bytes]) -> pa.Array:
    """Texts given as UTF-8 bytes (JSON the source's parser has read, so valid UTF-8) as one Arrow string
    array, made of two buffers: their bytes joined and where each starts. `pa.array` copies them one by one,
    growing its buffer as it goes: ~2.5 µs per ~700-byte event, on the writer's thread with the GIL held,
    which is the reader's time."""
    starts = array("q", accumulate(map(len, texts), initial=0))
    buffers = [None, pa.py_buffer(starts), pa.py_buffer(b"".join(texts))]
    return pa.Array.from_buffers(pa.large_string(), len(texts), buffers)


def write(db: duckdb.DuckDBPyConnection, batch: IngestBatch, *, creates_are_new: bool) -> None:
    """What `Store.apply` writes of a batch, in the transaction under way; `creates_are_new`: as plain inserts."""
    if batch.blips:
        with incoming(db, BLIP_COLUMNS, batch.blips.values()):
            if creates_are_new:
                db.execute(INSERT_CREATED_BLIPS)
                db.execute(UPSERT_CHANGED_BLIPS)
            else:
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


def add_counters(db: duckdb.DuckDBPyConnection, counters: Mapping[str, int]) -> None:
    # One statement for all of them: DuckDB plans each statement anew, a few ms apiece.
    db.execute(
        """INSERT INTO counters (name, value) SELECT unnest($names), unnest($values)
           ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value""",
        {"names": list(counters), "values": list(counters.values())},
    )


def now() -> datetime:
    return datetime.now(timezone.utc)
