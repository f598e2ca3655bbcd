"""The control plane's windows, copied into the history store for the reports that read them (silence,
errors): a report scans the copy, brought up to date first with only the windows written since the last
copy (`blipflow.control.scans`), instead of reading every window of the ledger each time (1.5 million in
bench/analytics.py: 8-17 s per report through Python's SQLite rows).

Derived data, as top-terms' counts are: dropping these tables only makes the next report copy every window
again. The copy remembers which control plane it is of and where its next read starts; a copy of another
plane, or of one whose marks went back (a new database at the same address), is replaced whole.

The ledger is read without holding the store, which ingest writes (a first copy reads for seconds), and
the copy is written in one transaction of the store; when another process copied meanwhile, the windows
are read again from where that copy stopped, so that an older read never overwrites a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from blipflow.control import scans
from blipflow.control.engine import ControlPlane
from blipflow.store.history import Store

COPY_TABLES = """
CREATE TABLE IF NOT EXISTS analytics_windows (
    id VARCHAR NOT NULL,
    agent VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    error VARCHAR
);
CREATE TABLE IF NOT EXISTS analytics_window_copy (
    plane VARCHAR NOT NULL,           -- the control plane copied (its URL without a password)
    next_change BIGINT NOT NULL       -- the next copy reads the windows marked at or above this
);
"""
# The copy as the reports read it, in place of the ledger table the DuckDB file kept before the control
# plane did (a temporary view, in front of that table).
WINDOWS_VIEW = """
CREATE OR REPLACE TEMP VIEW windows AS
SELECT agent, state, created_at, attempts, failures, error FROM analytics_windows;
"""


@dataclass(frozen=True)
class Position:
    """Where the copy of one control plane stands: the windows marked below `next_change` are in it."""

    plane: str
    next_change: int


NOTHING_COPIED = Position("", 0)


def bring_up_to_date(store: Store, plane: ControlPlane) -> int:
    """Copy the windows written since the last copy; returns how many were copied."""
    with store.connect() as db:
        start = position(db, plane)
    changes = read_since(plane, start)
    with store.transaction() as db:
        current = position(db, plane)
        if current != start:  # another process copied meanwhile: its copy may be newer than this read
            changes = read_since(plane, current)
        return write(db, plane, current, changes)


def position(db: duckdb.DuckDBPyConnection, plane: ControlPlane) -> Position:
    db.execute(COPY_TABLES)
    rows = db.execute("SELECT plane, next_change FROM analytics_window_copy").fetchall()
    if not rows or rows[0][0] != plane.name:
        return NOTHING_COPIED
    return Position(*rows[0])


def read_since(plane: ControlPlane, start: Position) -> scans.WindowChanges:
    changes = scans.window_changes(plane, start.next_change)
    if changes.next_change < start.next_change:  # not the database copied before: copy it whole
        return scans.window_changes(plane, 0)
    return changes


def write(db: duckdb.DuckDBPyConnection, plane: ControlPlane, start: Position, changes: scans.WindowChanges) -> int:
    """Replace the copied windows by the ones read (all of them when the read was a whole one)."""
    whole = start == NOTHING_COPIED or changes.next_change < start.next_change
    db.register("window_changes", changes.windows)
    try:
        if whole:
            db.execute("DELETE FROM analytics_windows")
        elif changes.windows.num_rows:
            db.execute("DELETE FROM analytics_windows WHERE id IN (SELECT id FROM window_changes)")
        db.execute("INSERT INTO analytics_windows BY NAME SELECT * FROM window_changes")
    finally:
        db.unregister("window_changes")
    db.execute("DELETE FROM analytics_window_copy")
    db.execute("INSERT INTO analytics_window_copy VALUES (?, ?)", [plane.name, changes.next_change])
    return changes.windows.num_rows
