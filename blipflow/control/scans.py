"""The ledger read whole, as Arrow columns, for the analytics reports to scan in DuckDB.

Reports over a large history read every window (1.5 million in bench/analytics.py). Rows through Python
would cost seconds per report (32 s for 1.6 million windows on a busy machine, where the ADBC driver took
3.8 s), so the drivers of Arrow Database Connectivity hand the rows over as columns straight from SQLite
or PostgreSQL (PostgreSQL's binary COPY), never as Python objects.
"""

from __future__ import annotations

from contextlib import closing

import pyarrow as pa
from sqlalchemy import func, select, text

from blipflow.control import tables
from blipflow.control.engine import ControlPlane, ControlPlaneError

# The columns of a window the reports read (blipflow/analytics/sql: silence, errors and the prelude's
# windows_in_range), each with a value of its kind: the SQLite driver learns a column's type from the first
# rows, and a column that starts with NULLs and then holds text would fail it; a first row of the right
# kinds (dropped again) teaches it. Every column more costs every report that reads windows.
WINDOW_COLUMNS = {"agent": "''", "state": "''", "created_at": "''", "attempts": "0", "failures": "0", "error": "''"}
TIMES = ("created_at",)


def windows(plane: ControlPlane) -> pa.Table:
    """Every window of the ledger, as the reports read it. SQLite keeps times as UTC text, which comes as text with its zone
    spelled out (`+00`); PostgreSQL's come as timestamps: DuckDB reads either as TIMESTAMPTZ."""
    plane.migrate()
    if plane.backend == "sqlite":
        kinds = ", ".join(f"{kind} AS {column}" for column, kind in WINDOW_COLUMNS.items())
        columns = ", ".join(f"{column} || '+00'" if column in TIMES else column for column in WINDOW_COLUMNS)
        query = f"SELECT {kinds} UNION ALL SELECT {columns} FROM windows"  # UNION ALL keeps that row first
    else:
        query = f"SELECT {', '.join(WINDOW_COLUMNS)} FROM windows"
    if plane.backend == "sqlite":
        # Through the plane's own SQLite, never a second copy of the library in this process (ADBC bundles
        # one): two SQLite libraries in one process release each other's file locks, which corrupts a WAL
        # database that another connection writes (seen: "database disk image is malformed").
        with plane.reading() as session:
            rows = session.execute(text(query)).all()
        columns = list(zip(*rows)) or [[] for _ in WINDOW_COLUMNS]
        return pa.table(dict(zip(WINDOW_COLUMNS, map(list, columns)))).slice(1)
    with closing(_connect(plane)) as connection, closing(connection.cursor()) as cursor:
        cursor.execute(query)
        return cursor.fetch_arrow_table()


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
