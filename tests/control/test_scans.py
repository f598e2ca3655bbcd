"""The ledger's windows written since a mark, as Arrow columns, on SQLite and a real PostgreSQL: the same
windows and values whether SQLite hands them over in one batch or in many (by row number), with times in
UTC and a window's missing error as null."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from blipflow.control import scans, tables
from blipflow.control.engine import ControlPlane
from blipflow.control.ledger import Ledger

OPENED = datetime(2026, 1, 5, 12, 0, 0, 250_000, tzinfo=timezone.utc)


def open_windows(plane: ControlPlane, count: int) -> list[str]:
    ids = [f"window-{number:02d}" for number in range(count)]
    with plane.writing() as session:
        session.add_all([tables.Window(id=window_id, agent=f"agent-{number % 3}", state="pending", size=1,
                                       created_at=OPENED + timedelta(seconds=number))
                         for number, window_id in enumerate(ids)])
    return ids


@pytest.mark.parametrize("batch", [1_000, 4])
def test_windows_written_since_a_mark_in_one_batch_or_many(control: ControlPlane, batch: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scans, "SQLITE_BATCH", batch)
    ids = open_windows(control, 11)
    Ledger(control).fail_window(ids[3], "letta 500", settled=True)
    everything = scans.window_changes(control)
    assert everything.windows.schema == scans.SCHEMA
    rows = sorted(everything.windows.to_pylist(), key=lambda row: row["id"])
    assert [row["id"] for row in rows] == ids
    assert rows[3] == {"id": ids[3], "agent": "agent-0", "state": "failed", "created_at": OPENED + timedelta(seconds=3),
                       "attempts": 1, "failures": 1, "error": "letta 500"}
    assert rows[4]["error"] is None and rows[4]["created_at"].utcoffset() == timedelta(0)

    for window_id in ids[5:]:
        Ledger(control).mark_sending(window_id)
    since = scans.window_changes(control, everything.next_change)
    assert sorted(since.windows["id"].to_pylist()) == ids[5:]
    assert since.next_change >= everything.next_change
