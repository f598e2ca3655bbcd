"""The control plane's windows as the reports read them: the ledger lives in the control plane now, and
the reports that weigh windows (errors, silence) run in DuckDB next to the blip history, so each report
gets a copy of the windows table in its session, under the name the SQL reads (`windows`)."""

from __future__ import annotations

import pyarrow as pa
from sqlalchemy import select

from blipflow.control import tables
from blipflow.control.engine import ControlPlane

TIME = pa.timestamp("us", tz="UTC")
WINDOW_COLUMNS = {
    "id": pa.string(), "agent": pa.string(), "state": pa.string(), "size": pa.int32(), "created_at": TIME,
    "sent_at": TIME, "finished_at": TIME, "attempts": pa.int32(), "error": pa.string(), "settled": pa.bool_(),
    "letta_ms": pa.float64(), "failures": pa.int32(), "strikes": pa.int32(), "retry_at": TIME,
}


def ledger_relations(plane: ControlPlane) -> dict[str, pa.Table]:
    """The ledger's tables the reports read, by the name they read them under."""
    window = tables.Window.__table__
    with plane.reading() as session:
        rows = session.execute(select(*(window.c[name] for name in WINDOW_COLUMNS))).all()
    columns = list(zip(*rows)) or [[] for _ in WINDOW_COLUMNS]
    return {"windows": pa.table({name: pa.array(column, type=kind)
                                 for (name, kind), column in zip(WINDOW_COLUMNS.items(), columns)})}
