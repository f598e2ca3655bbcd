"""Change marks on the ledger's windows, on SQLite and a real PostgreSQL: every way the ledger writes a
window — opening it, each step of sending it, failing, quarantining, retrying or dropping it — makes it one
of the windows read since the last read, and only it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from blipflow.control.blips import Blips
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import BlipFacts
from blipflow.control.ledger import Ledger
from blipflow.control.scans import window_changes

HUMAN = "did:plc:human"


def uri(n: int) -> str:
    return f"at://{HUMAN}/stream.thought.blip/3k{n:05d}"


def written_since(control: ControlPlane, since: int) -> tuple[list[str], int]:
    changes = window_changes(control, since)
    return sorted(changes.windows["id"].to_pylist()), changes.next_change


WRITES: dict[str, Callable[[Ledger, str], object]] = {
    "mark_sending": lambda ledger, window: ledger.mark_sending(window),
    "finish_window": lambda ledger, window: ledger.finish_window(window, "scout", ["Hi."], 5.0),
    "finish_silently": lambda ledger, window: ledger.finish_window(window, "scout", [], 5.0),
    "fail_window": lambda ledger, window: ledger.fail_window(window, "letta 500", settled=True, strike=True),
    "clear_retry_at": lambda ledger, window: ledger.clear_retry_at(window),
    "quarantine_window": lambda ledger, window: ledger.quarantine_window(window),
    "retry": lambda ledger, window: ledger.retry_or_drop_window(window, "failed"),
    "drop": lambda ledger, window: ledger.retry_or_drop_window(window, "dropped"),
}


@pytest.mark.parametrize("write", WRITES)
def test_every_write_of_a_window_marks_it_as_written_since_the_last_read(control: ControlPlane, write: str) -> None:
    blips, ledger = Blips(control), Ledger(control)
    blips.add([BlipFacts(uri(n), HUMAN, 1_000 + n, cid=f"bafy{n}", content=f"blip {n}") for n in range(4)])
    first, second = ledger.decide("scout", {}, [uri(0), uri(1)]), ledger.decide("scout", {}, [uri(2)])
    everything, since = written_since(control, 0)
    assert everything == sorted([first, second])
    assert written_since(control, since) == ([], since)

    # failed and waiting, so that a retry or a drop has a window to change
    ledger.fail_window(second, "letta 500", settled=True, retry_at=datetime.now(timezone.utc) + timedelta(hours=1))
    changed, since = written_since(control, since)
    assert changed == [second]
    WRITES[write](ledger, second)
    assert written_since(control, since)[0] == [second]
    opened = ledger.decide("scout", {uri(3): "author_not_wanted"}, [])
    assert opened is None and written_since(control, written_since(control, since)[1])[0] == []
