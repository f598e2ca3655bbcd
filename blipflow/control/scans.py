"""The ledger's windows written since a mark, as Arrow columns, for analytics to keep its copy of them
up to date (`blipflow.analytics.window_copy`): a report then scans that copy instead of every window here.

A first read (from mark 0) hands over every window (1.5 million in bench/analytics.py, seconds of work);
each read after it only those written since. SQLite's rows come through the plane's own SQLite library,
never a second copy of it in this process (ADBC bundles one): two SQLite libraries in one process release
each other's file locks, which corrupted a WAL database that another connection wrote ("database disk
image is malformed"). PostgreSQL's come through its ADBC driver (binary COPY), never as Python objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass

import orjson
import pyarrow as pa
from sqlalchemy import func, select, text
from sqlmodel import Session

from blipflow.control import tables
from blipflow.control.changes import next_change
from blipflow.control.engine import ControlPlane, ControlPlaneError

# The columns of a window that the reports read (blipflow/analytics/sql: silence, errors and the prelude's
# windows_in_range) with its id, as Arrow types: every column more costs every copy.
WINDOW_COLUMNS = {"id": pa.string(), "agent": pa.string(), "state": pa.string(),
                  "created_at": pa.timestamp("us", tz="UTC"), "attempts": pa.int32(), "failures": pa.int32(),
                  "error": pa.string()}
SCHEMA = pa.schema(WINDOW_COLUMNS)
SQLITE_BATCH = 200_000  # windows by row number


@dataclass(frozen=True)
class WindowChanges:
    """The windows written at or after a mark, and the mark to read from next time: every window written
    after this read is marked at or above `next_change` (see `blipflow.control.changes`)."""

    windows: pa.Table  # SCHEMA
    next_change: int


def window_changes(plane: ControlPlane, since: int = 0) -> WindowChanges:
    """The windows written at or after the mark `since` (0: all of them)."""
    with plane.reading() as session:
        # The next mark before the windows (on SQLite in the same snapshot): whatever commits after it is
        # marked at or above it, and the read after it sees at least what had committed before it.
        following = session.execute(select(next_change())).scalar_one()
        if plane.backend == "sqlite":
            return WindowChanges(_sqlite_windows(session, since), following)
    with closing(_connect(plane)) as connection, closing(connection.cursor()) as cursor:
        cursor.execute(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM windows WHERE changed >= {int(since)}")
        return WindowChanges(cursor.fetch_arrow_table().cast(SCHEMA), following)


def _sqlite_windows(session: Session, since: int) -> pa.Table:
    """The windows as columns, each as one JSON array built by SQLite: for 1.5 million windows, parsing those
    took 2-5 s where turning Python's rows into columns took 11-13 s (a busy machine). Many windows come by
    ranges of SQLite's row numbers, so that a first read holds one batch of JSON at a time; a few come
    through the index of their marks, as one batch."""
    arrays = ", ".join(f"json_group_array({column})" for column in WINDOW_COLUMNS)
    written = "changed >= :since"
    count = session.execute(text(f"SELECT count(*) FROM windows WHERE {written}"), {"since": since}).scalar_one()
    if count <= SQLITE_BATCH:
        texts = session.execute(text(f"SELECT {arrays} FROM windows WHERE {written}"), {"since": since}).one()
        return pa.Table.from_batches([_sqlite_batch(texts)], schema=SCHEMA)
    query = text(f"SELECT {arrays} FROM windows WHERE rowid >= :first AND rowid < :end AND {written}")
    last = session.execute(text("SELECT coalesce(max(rowid), 0) FROM windows")).scalar_one()
    ranges = ({"since": since, "first": first, "end": first + SQLITE_BATCH} for first in range(0, last + 1, SQLITE_BATCH))
    batches = (_sqlite_batch(session.execute(query, bounds).one()) for bounds in ranges)
    return pa.Table.from_batches([batch for batch in batches if batch.num_rows], schema=SCHEMA)


def _sqlite_batch(texts: Sequence[str]) -> pa.RecordBatch:
    arrays = []
    for (name, kind), values in zip(WINDOW_COLUMNS.items(), map(orjson.loads, texts)):
        if name == "created_at":  # SQLite keeps times as UTC text without a zone (see tables.UtcDateTime)
            arrays.append(pa.array(values, pa.string()).cast(pa.timestamp("us")).cast(kind))
        else:
            arrays.append(pa.array(values, kind))
    return pa.record_batch(arrays, schema=SCHEMA)


def window_count(plane: ControlPlane) -> int:
    with plane.reading() as session:
        return session.execute(select(func.count()).select_from(tables.Window)).scalar_one()


def _connect(plane: ControlPlane):  # noqa: ANN202 - an ADBC DB-API connection to PostgreSQL
    try:
        import adbc_driver_postgresql.dbapi

        return adbc_driver_postgresql.dbapi.connect(plane.url.set(drivername="postgresql")
                                                    .render_as_string(hide_password=False))
    except Exception as error:  # noqa: BLE001 - any driver's failure to connect is one line naming the database
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ControlPlaneError(f"control plane {plane.name}: cannot read it for analytics: {reason}") from None
