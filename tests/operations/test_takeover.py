"""Taking over a store of the previous layout (the ledger and outbox inside the DuckDB file), built by the
old code path — the DuckDB store's own ledger methods — on SQLite and a real PostgreSQL: no window, no
queued reply and no posted part is lost, each agent goes on where it was, and it happens once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from blipflow.config import StoreConfig
from blipflow.control import tables
from blipflow.control.blips import Blips
from blipflow.control.circuits import Circuits
from blipflow.control.coordination import Coordination
from blipflow.control.engine import ControlPlane
from blipflow.control.ledger import Ledger
from blipflow.control.outbox import Outbox
from blipflow.model.ledger import Circuit
from blipflow.model.refs import AnsweredBlip, Ref
from blipflow.operations.takeover import take_over
from blipflow.store.history import IngestBatch, Store
from tests.support.frames import T0, blips, commit_frame, uri
from tests.support.previous_layout import PreviousLayoutLedger

HUMAN = "did:plc:human0000000000000000000"
SCOUT = "did:plc:scout0000000000000000000"
THREAD = {"uri": uri(HUMAN, "h0"), "cid": "bafyroot"}
OPENED = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def old_store(path) -> Store:
    """Five blips; for scout: h0 skipped, a window of h1+h2 answered twice (one reply posted in two parts,
    one queued), a failed window (h3) waiting to be retried; h4 undecided; scout's circuit open."""
    store = Store(path)
    old = PreviousLayoutLedger(store)
    frames = [commit_frame(HUMAN, "h0", T0, content="the thread", cid="bafyroot"),
              commit_frame(HUMAN, "h1", T0 + 1, content="one", cid="bafy1", reply={"root": THREAD, "parent": THREAD}),
              commit_frame(HUMAN, "h2", T0 + 2, content="two", cid="bafy2"),
              commit_frame(HUMAN, "h3", T0 + 3, content="three", cid="bafy3"),
              commit_frame(HUMAN, "h4", T0 + 4, content="four", cid="bafy4")]
    store.apply(IngestBatch(blips=blips(*frames[:4])))
    old.decide("scout", {uri(HUMAN, "h0"): "not_wanted"}, [])
    answered = old.decide("scout", {}, [uri(HUMAN, "h1"), uri(HUMAN, "h2")])
    old.mark_sending(answered)
    old.finish_window(answered, "scout", ["first reply", "second reply"], 120.0)
    old.record_post(f"{answered}:0", 0, "scout.test", "at://did:plc:scout/stream.thought.blip/p0", "bafyp0", last=False)
    old.record_post(f"{answered}:0", 1, "scout.test", "at://did:plc:scout/stream.thought.blip/p1", "bafyp1", last=True)
    failed = old.decide("scout", {}, [uri(HUMAN, "h3")])
    old.fail_window(failed, "Letta answered 500", settled=True, retry_at=OPENED + timedelta(minutes=5), strike=True)
    old.save_circuit("scout", "open", 5, OPENED, "Letta answered 500")
    store.apply(IngestBatch(blips=blips(frames[4])))
    return store


def counts(plane: ControlPlane) -> dict[str, int]:
    with plane.reading() as session:
        return {model.__tablename__: session.execute(select(func.count()).select_from(model)).scalar_one()
                for model in (tables.Blip, tables.Window, tables.Delivery, tables.AgentProgress, tables.Circuit,
                              tables.Reply, tables.Post)}


def test_the_ledger_and_outbox_of_an_old_store_are_taken_over_once(tmp_path, control: ControlPlane) -> None:
    store = old_store(tmp_path / "old.duckdb")
    [answered, failed] = [record.id for record in PreviousLayoutLedger(store).window_records(["answered", "failed"])]

    taken = take_over(control, StoreConfig(path=tmp_path / "old.duckdb"))

    assert (taken.blips, taken.windows, taken.replies, taken.already) == (5, 2, 2, False)
    ledger, outbox = Ledger(control), Outbox(control)
    assert ledger.window_records(["answered", "failed"]) == PreviousLayoutLedger(store).window_records(["answered", "failed"])
    [waiting] = ledger.windows_in(["failed"])
    assert (waiting.id, waiting.settled, waiting.retry_at) == (failed, True, OPENED + timedelta(minutes=5))
    [queued] = outbox.replies(10)  # the reply still to post, with the blips it answers, as publish reads it
    assert (queued.id, queued.content, queued.state) == (f"{answered}:1", "second reply", "queued")
    assert queued.answers == (AnsweredBlip(uri(HUMAN, "h1"), "bafy1", THREAD["uri"], THREAD["cid"]),
                              AnsweredBlip(uri(HUMAN, "h2"), "bafy2"))
    [posted] = outbox.replies(1, f"{answered}:0")
    assert posted.state == "posted" and posted.posted == (Ref("at://did:plc:scout/stream.thought.blip/p0", "bafyp0"),
                                                         Ref("at://did:plc:scout/stream.thought.blip/p1", "bafyp1"))
    # The record keys of the queued reply are made of its time: it must be the old store's, to the µs.
    assert queued.created_us == store.query_all("SELECT epoch_us(created_at) FROM replies WHERE id = ?",
                                                [queued.id])[0][0]
    assert Circuits(control).all() == {"scout": Circuit("open", 5, OPENED, "Letta answered 500")}
    # coordination goes on where scout was: only the blip it never decided is new to it
    assert undecided(control) == [uri(HUMAN, "h4")]
    assert Blips(control).facts(uri(HUMAN, "h1")).root_uri == THREAD["uri"]

    before = counts(control)
    outbox.record_post(queued.id, 0, "scout.test", "at://did:plc:scout/stream.thought.blip/q0", "bafyq0", last=True)
    again = take_over(control, StoreConfig(path=tmp_path / "old.duckdb"))
    assert again.already
    assert outbox.replies(10) == []  # what happened here since is not undone
    assert counts(control) == {**before, "posts": before["posts"] + 1}


def test_a_copy_run_again_over_what_it_copied_changes_nothing(tmp_path, control: ControlPlane) -> None:
    """Were the record of a takeover lost, copying again keeps every row as the control plane has it."""
    old_store(tmp_path / "old.duckdb")
    take_over(control, StoreConfig(path=tmp_path / "old.duckdb"))
    [queued] = Outbox(control).replies(10)
    Outbox(control).record_post(queued.id, 0, "scout.test", "at://did:plc:scout/stream.thought.blip/q0", "bafyq0",
                                last=True)
    before = counts(control)
    with control.writing() as session:
        session.execute(tables.Takeover.__table__.delete())

    again = take_over(control, StoreConfig(path=tmp_path / "old.duckdb"))

    assert not again.already
    assert counts(control) == before
    assert Outbox(control).replies(10) == []
    assert undecided(control) == [uri(HUMAN, "h4")]


def undecided(control: ControlPlane) -> list[str]:
    coordination = Coordination(control)
    start = coordination.position(datetime.now(timezone.utc)).through_seq
    return [new.facts.uri for new in coordination.new_blips(start, [], 10)]


def test_no_old_store_means_nothing_to_take_over_and_no_file_made(tmp_path, control: ControlPlane) -> None:
    taken = take_over(control, StoreConfig(path=tmp_path / "none.duckdb"))
    assert (taken.blips, taken.windows, taken.replies, taken.already) == (0, 0, 0, False)
    assert not (tmp_path / "none.duckdb").exists()
    assert counts(control)["windows"] == 0
