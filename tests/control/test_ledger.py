"""The control plane's delivery ledger, on SQLite and a real PostgreSQL: the DuckDB store's semantics
(a window of what coordination handed, coordination's position, attempts, failures, quarantine, retry, drop),
and every (agent, blip) decided once even when separate processes race to decide it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select

from blipflow.control import tables
from blipflow.control.blips import Blips
from blipflow.control.coordination import Coordination, Decided
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import BlipFacts
from blipflow.control.ledger import Ledger
from blipflow.control.outbox import Outbox
from blipflow.model.ledger import Window
from tests.support.control_plane import decide_everything
from tests.support.racing import racing

HUMAN, AGENT_A, AGENT_B = "did:plc:human", "did:plc:agenta", "did:plc:agentb"


def blip(n: int, did: str = HUMAN, parent: int | None = None, **fields) -> BlipFacts:
    parent_uri = None if parent is None else uri(parent)
    return BlipFacts(uri(n), did, 1_000 + n, cid=f"bafy{n}", content=f"blip {n}", parent_uri=parent_uri,
                     parent_cid=parent_uri and f"bafy{parent}", **fields)


def uri(n: int) -> str:
    return f"at://did:plc:someone/stream.thought.blip/3k{n:05d}"


def handed(*numbers: int, agent: str = "scout") -> list[Decided]:
    return [Decided(agent, uri(n), "selected", None, "broadcast", "") for n in numbers]


def coordinated(control: ControlPlane, decided: list[Decided], through: int) -> None:
    coordination = Coordination(control)
    assert coordination.record(decided, coordination.position(datetime.now(timezone.utc)), through, {})


def test_a_window_takes_what_coordination_handed_and_each_blip_is_decided_once(control: ControlPlane) -> None:
    blips, ledger = Blips(control), Ledger(control)
    blips.add([blip(1), blip(2, did=AGENT_A), blip(3), blip(4)])
    coordinated(control, [*handed(1, 3, 4), Decided("scout", uri(2), None, "own_blip", "broadcast", "")], 4)
    assert [c.uri for c in ledger.handed_unsent("scout", 10)] == [uri(1), uri(3), uri(4)]

    window_id = ledger.decide("scout", {}, [uri(1), uri(3)])
    assert ledger.window(window_id) == Window(window_id, "scout", "pending", 2)
    assert [b.uri for b in blips.window_blips(window_id)] == [uri(1), uri(3)]
    assert [c.uri for c in ledger.handed_unsent("scout", 10)] == [uri(4)]
    with control.reading() as session:  # the reason coordination gave stays with the sent blip
        assert session.get(tables.Delivery, ("scout", uri(1))).handed_for == "selected"

    assert ledger.decide("scout", {}, [uri(3)]) is None  # in a window already: refused, nothing kept
    assert ledger.decide("scout", {}, [uri(2)]) is None  # skipped: refused
    assert [w.id for w in ledger.windows_in(["pending"])] == [window_id]
    blips.add([BlipFacts(uri(4), HUMAN, 9_000, deleted=True)])
    assert ledger.handed_unsent("scout", 10) == []  # deleted before it was sent: nothing to send


def test_coordination_starts_with_the_backlog_and_a_stale_round_writes_nothing(control: ControlPlane) -> None:
    blips, coordination = Blips(control), Coordination(control)
    long_ago = datetime.now(timezone.utc) - timedelta(days=1)
    blips.add([blip(1), blip(2)], stored_at=long_ago)
    blips.add([blip(3)])
    first = coordination.position(datetime.now(timezone.utc) - timedelta(hours=1))
    assert (first.through_seq, first.version) == (2, 0)
    assert [new.facts.uri for new in coordination.new_blips(first.through_seq, [], 10)] == [uri(3)]
    assert coordination.record(handed(3), first, 3, {"rotation": 1})
    assert not coordination.record(handed(3, agent="other"), first, 3, {})  # another process got there first
    now = coordination.position(datetime.now(timezone.utc))
    assert (now.through_seq, now.version, now.state) == (3, 1, {"rotation": 1})
    assert coordination.position(datetime.now(timezone.utc), known_version=1).state is None  # not read again
    with control.reading() as session:
        assert session.execute(select(func.count()).select_from(tables.Delivery)).scalar_one() == 1


def test_new_blips_carry_the_agent_only_chain_they_end(control: ControlPlane) -> None:
    blips = Blips(control)
    blips.add([blip(1), blip(2, AGENT_A, parent=1), blip(3, AGENT_B, parent=2), blip(4, AGENT_A, parent=3),
               blip(5, parent=4)])
    depths = {new.facts.uri: new.chain_depth for new in Coordination(control).new_blips(0, [AGENT_A, AGENT_B], 10)}
    assert depths == {uri(1): 0, uri(2): 1, uri(3): 2, uri(4): 3, uri(5): 0}


def test_later_operations_win_and_a_deleted_blip_is_no_candidate(control: ControlPlane) -> None:
    blips = Blips(control)
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    blips.add([blip(1, created_at=created, tags=("python",))])
    blips.add([BlipFacts(uri(1), HUMAN, 900, content="an older edit")])  # older by the source's clock: ignored
    blips.add([blip(1, created_at=created, tags=("python",))])  # a replay: no change
    stored = blips.facts(uri(1))
    assert (stored.content, stored.created_at, stored.tags, stored.seq) == ("blip 1", created, ["python"], 1)
    blips.add([BlipFacts(uri(1), HUMAN, 5_000, deleted=True)])
    stored = blips.facts(uri(1))
    assert (stored.deleted, stored.content, stored.created_at) == (True, None, created)
    assert Coordination(control).new_blips(0, [], 10) == []


def test_arrival_numbers_are_never_handed_out_again(control: ControlPlane) -> None:
    """An agent's progress is a number below which all is decided: a blip numbered below it would be lost."""
    blips = Blips(control)
    blips.add([blip(1), blip(2)])
    with control.writing() as session:
        session.execute(delete(tables.Blip).where(tables.Blip.uri == uri(2)))  # pruned, say
    blips.add([blip(3)])
    assert blips.facts(uri(3)).seq == 3


def test_a_window_through_sending_failures_quarantine_retry_and_answer(control: ControlPlane) -> None:
    blips, ledger, outbox = Blips(control), Ledger(control), Outbox(control)
    blips.add([blip(1)])
    window_id = ledger.decide("scout", {}, [uri(1)])
    ledger.mark_sending(window_id)
    sending = ledger.window(window_id)
    assert sending.state == "sending" and sending.unsettled()

    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert ledger.fail_window(window_id, "Letta timed out", settled=False, retry_at=later) == 0
    assert ledger.fail_window(window_id, "KeyError: 'x'", settled=True, retry_at=later, strike=True) == 1
    failed = ledger.window(window_id)
    assert (failed.state, failed.settled, failed.retry_at, failed.due(later - timedelta(seconds=1))) == \
        ("failed", True, later, False)
    ledger.clear_retry_at(window_id)
    assert ledger.window(window_id).due(datetime.now(timezone.utc))

    ledger.quarantine_window(window_id)
    [record] = ledger.window_records(["quarantined"])
    assert (record.attempts, record.failures, record.error) == (2, 2, "KeyError: 'x'")
    assert ledger.retry_or_drop_window(window_id, "failed").state == "quarantined"
    assert ledger.fail_window(window_id, "again", settled=True, strike=True) == 1  # strikes start anew
    assert ledger.retry_or_drop_window("no-such-window", "failed") is None

    ledger.finish_window(window_id, "scout", ["first", "second"], 123.5)
    answered = ledger.window(window_id)
    assert (answered.state, answered.retry_at) == ("answered", None)
    assert [(r.id, r.content) for r in outbox.replies(10)] == [(f"{window_id}:0", "first"), (f"{window_id}:1", "second")]
    assert outbox.replies_since("scout", datetime.now(timezone.utc) - timedelta(minutes=1)) == 2
    assert ledger.retry_or_drop_window(window_id, "dropped").state == "answered"  # left alone
    assert ledger.window(window_id).state == "answered"


def test_a_silent_answer_and_a_dropped_window(control: ControlPlane) -> None:
    blips, ledger = Blips(control), Ledger(control)
    blips.add([blip(1), blip(2)])
    quiet, doomed = ledger.decide("scout", {}, [uri(1)]), ledger.decide("scout", {}, [uri(2)])
    ledger.finish_window(quiet, "scout", [], 10.0)
    ledger.fail_window(doomed, "refused", settled=True)
    ledger.retry_or_drop_window(doomed, "dropped")
    assert {w.id: w.state for w in ledger.windows_in(["silent", "dropped"], agent="scout")} == \
        {quiet: "silent", doomed: "dropped"}
    assert ledger.windows_in(["pending", "sending", "failed"]) == []


@pytest.mark.process
def test_each_agent_and_blip_is_decided_once_when_processes_race(control: ControlPlane, control_url: str) -> None:
    """Four processes open windows of 3 of the same agent's 400 handed blips at once: every blip ends in
    exactly one window, every window a process was told it opened exists whole, and none other does."""
    blips = Blips(control)
    blips.add([blip(n) for n in range(1, 401)])
    coordinated(control, handed(*range(1, 401)), 400)
    reports = racing(decide_everything, [(control_url, "scout", 3)] * 4)

    opened = [window for report in reports for window in report["opened"]]
    assert len(opened) == len(set(opened))
    with control.reading() as session:
        windows = dict(session.execute(select(tables.Window.id, tables.Window.size)).all())
        sizes = dict(session.execute(select(tables.Delivery.window_id, func.count())
                                     .group_by(tables.Delivery.window_id)).all())
        decided = session.execute(select(func.count(), func.count(func.distinct(tables.Delivery.blip_uri)))).one()
    assert set(windows) == set(opened)  # no window a process believes in is missing, and no stray one
    assert sizes == windows  # each window holds exactly the blips it was opened with
    assert tuple(decided) == (400, 400)
    # They did race: several processes opened windows, and some decisions were refused.
    assert sum(bool(report["opened"]) for report in reports) >= 2 and sum(report["lost"] for report in reports), reports
