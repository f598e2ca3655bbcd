"""The store's copy of the control plane's windows, on SQLite and a real PostgreSQL: the silence and errors
reports see every window as the ledger holds it now — one that changed state between two reports too, one
whose write was still uncommitted while a copy read, and a whole other plane — while a copy after the first
reads only the windows written since."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import update

from blipflow.analytics import window_copy
from blipflow.analytics.reports import Selection, reports, run_report
from blipflow.analytics.window_copy import bring_up_to_date
from blipflow.config import AgentConfig
from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.control.ledger import Ledger
from blipflow.store.history import Store

OPENED = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
AGENTS = [AgentConfig(name="scout", agent_id="agent-scout", did="did:plc:scout")]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "history.duckdb", lock_timeout=10)


def open_windows(plane: ControlPlane, count: int, agent: str = "scout") -> list[str]:
    ids = [f"{agent}-{number}" for number in range(count)]
    with plane.writing() as session:
        session.add_all([tables.Window(id=window_id, agent=agent, state="pending", size=1,
                                       created_at=OPENED + timedelta(minutes=number))
                         for number, window_id in enumerate(ids)])
    return ids


def silence(store: Store, plane: ControlPlane) -> list[tuple]:
    """(agent, windows, answered, silent, failed, open) per agent."""
    table = run_report(store, plane, reports()["silence"], Selection(), AGENTS)
    return [(row["agent"], row["windows"], row["answered"], row["silent"], row["failed"], row["open"])
            for row in table.to_pylist()]


def errors(store: Store, plane: ControlPlane) -> list[tuple]:
    """(agent, calls, failed_calls, failing, quarantined, top_error) per agent."""
    table = run_report(store, plane, reports()["errors"], Selection(), AGENTS)
    return [(row["agent"], row["calls"], row["failed_calls"], row["failing"], row["quarantined"], row["top_error"])
            for row in table.to_pylist()]


def test_a_window_that_changes_state_between_reports_is_seen_as_it_is_now(store: Store,
                                                                         control: ControlPlane) -> None:
    ledger = Ledger(control)
    first, second, third = open_windows(control, 3)
    ledger.mark_sending(first)
    ledger.fail_window(first, "letta 500", settled=True)
    assert silence(store, control) == [("scout", 3, 0, 0, 1, 2)]
    assert errors(store, control) == [("scout", 1, 1, 1, 0, "letta 500")]

    ledger.mark_sending(first)
    ledger.finish_window(first, "scout", ["Yes."], 900.0)  # failed → answered
    ledger.mark_sending(second)
    ledger.finish_window(second, "scout", [], 400.0)  # pending → silent
    assert silence(store, control) == [("scout", 3, 1, 1, 0, 1)]
    assert errors(store, control) == [("scout", 3, 1, 0, 0, None)]

    ledger.mark_sending(third)
    ledger.fail_window(third, "timed out", settled=False)
    ledger.quarantine_window(third)  # pending → failed → quarantined, between two reports
    assert errors(store, control) == [("scout", 4, 2, 0, 1, "timed out")]
    ledger.retry_or_drop_window(third, "dropped")
    assert silence(store, control) == [("scout", 3, 1, 1, 0, 0)]
    assert errors(store, control) == [("scout", 4, 2, 0, 0, None)]


def test_a_copy_after_the_first_reads_only_the_windows_written_since(store: Store, control: ControlPlane) -> None:
    ledger = Ledger(control)
    ids = open_windows(control, 50)
    assert bring_up_to_date(store, control) == 50
    assert bring_up_to_date(store, control) == 0
    ledger.mark_sending(ids[7])
    ledger.clear_retry_at(ids[9])
    open_windows(control, 1, agent="sage")
    assert bring_up_to_date(store, control) == 3
    with store.connect() as db:
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM analytics_windows").fetchall() == [(51, 51)]
        assert db.execute("SELECT state FROM analytics_windows WHERE id = ?", [ids[7]]).fetchall() == [("sending",)]


def test_a_window_committed_after_a_copy_read_is_in_the_next_copy(store: Store, control: ControlPlane) -> None:
    """A write that began before a copy read and committed after it (on PostgreSQL, a transaction whose id
    is below that of one committed before the read) must not fall behind the copy's next start."""
    late, early, other = open_windows(control, 3)
    bring_up_to_date(store, control)
    with control.writing() as session:
        session.execute(update(tables.Window).where(tables.Window.id == late).values(state="answered", attempts=1))
        session.flush()
        if control.backend == "postgresql":  # SQLite has one writer at a time: this one would wait for it
            Ledger(control).mark_sending(early)
        assert silence(store, control)[0][2] == 0  # not committed yet: not answered in the report
    assert silence(store, control) == [("scout", 3, 1, 0, 0, 2)]
    Ledger(control).mark_sending(other)
    assert silence(store, control) == [("scout", 3, 1, 0, 0, 2)]


def test_a_copy_of_another_control_plane_is_replaced_whole(store: Store, control: ControlPlane, tmp_path: Path) -> None:
    open_windows(control, 4)
    assert silence(store, control) == [("scout", 4, 0, 0, 0, 4)]
    other = ControlPlane(f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        open_windows(other, 2, agent="sage")
        assert silence(store, other) == [("sage", 2, 0, 0, 0, 2)]
    finally:
        other.dispose()
    assert silence(store, control) == [("scout", 4, 0, 0, 0, 4)]


def test_a_new_database_at_the_same_address_is_copied_whole(store: Store, tmp_path: Path) -> None:
    """Its marks start again below where the copy of the old one stopped."""
    url = f"sqlite:///{tmp_path / 'control.sqlite'}"
    old = ControlPlane(url)
    ids = open_windows(old, 5)
    for window_id in ids:
        Ledger(old).mark_sending(window_id)
    assert silence(store, old) == [("scout", 5, 0, 0, 0, 5)]
    old.dispose()
    for leftover in tmp_path.glob("control.sqlite*"):
        leftover.unlink()
    new = ControlPlane(url)
    try:
        open_windows(new, 2, agent="sage")
        assert silence(store, new) == [("sage", 2, 0, 0, 0, 2)]
    finally:
        new.dispose()


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    yield Store(tmp_path / "a.duckdb", lock_timeout=10), Store(tmp_path / "b.duckdb", lock_timeout=10)


def test_copies_in_two_stores_keep_their_own_places(two_stores: tuple[Store, Store], control: ControlPlane) -> None:
    first, second = two_stores
    ids = open_windows(control, 3)
    assert silence(first, control) == [("scout", 3, 0, 0, 0, 3)]
    Ledger(control).mark_sending(ids[0])
    Ledger(control).finish_window(ids[0], "scout", [], 10.0)
    assert silence(second, control) == silence(first, control) == [("scout", 3, 0, 1, 0, 2)]


def test_a_copy_made_meanwhile_by_another_process_is_not_undone_by_an_older_read(
        store: Store, control: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger is read without holding the store: another copy may land between that read and the write."""
    ledger = Ledger(control)
    (window,) = open_windows(control, 1)
    bring_up_to_date(store, control)
    ledger.mark_sending(window)
    read_since, reads = window_copy.read_since, []

    def read_then_another_copies(plane: ControlPlane, start: window_copy.Position) -> object:
        changes = read_since(plane, start)
        if not reads:
            reads.append(changes)
            ledger.finish_window(window, "scout", ["Hi."], 5.0)
            bring_up_to_date(store, control)  # as another process would, between this read and its write
        return changes

    monkeypatch.setattr(window_copy, "read_since", read_then_another_copies)
    bring_up_to_date(store, control)
    assert reads[0].windows["state"].to_pylist() == ["sending"]  # what the older read saw
    with store.connect() as db:
        assert db.execute("SELECT state FROM analytics_windows").fetchall() == [("answered",)]
