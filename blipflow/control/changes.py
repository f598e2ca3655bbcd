"""Change marks on windows: every write of a window stamps it, so that a reader that remembers where its
last read stopped (`next_change`) finds every window written since among those marked at or above it —
the analytics copy of the ledger reads only those, not all of them (`blipflow.control.scans`).

A mark is not a clock: two writers' clocks, or the order in which two transactions took their times,
would let a window committed late carry a time below one a reader has already passed.

- SQLite takes one writer at a time (a write transaction holds the write lock from its start, see
  `engine`), so a write's mark is one more than the highest there: it is above every mark a reader could
  have seen before it committed. The next read starts one above the highest mark it saw.
- PostgreSQL commits transactions in any order, so a write's mark is its transaction's id (64 bits, never
  wrapping), and a read's stopping point is the oldest transaction still running when it read
  (`pg_snapshot_xmin`): whatever commits later has an id at or above that. A later read may see some of the
  same windows again; the copy replaces them by id.

Windows are never deleted (a window set aside is `dropped`), so marks never need a tombstone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class written_mark(FunctionElement[int]):  # noqa: N801 - a SQL function, named as SQL names them
    """The mark of the window write that evaluates it (a column default: see `tables.Window.changed`)."""

    type = BigInteger()
    name = "written_mark"
    inherit_cache = True


class next_change(FunctionElement[int]):  # noqa: N801
    """Where the next read of changes starts, evaluated in the snapshot that a read of changes sees."""

    type = BigInteger()
    name = "next_change"
    inherit_cache = True


# On SQLite a write's mark and the next read's start are the same: one above the highest mark there.
ABOVE_THE_HIGHEST = "(SELECT coalesce(max(changed), 0) + 1 FROM windows)"


@compiles(written_mark, "sqlite")
@compiles(next_change, "sqlite")
def _sqlite_above_the_highest(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return ABOVE_THE_HIGHEST


@compiles(written_mark, "postgresql")
def _postgresql_written_mark(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return "pg_current_xact_id()::text::bigint"


@compiles(next_change, "postgresql")
def _postgresql_next_change(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
