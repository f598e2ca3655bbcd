"""The control plane's outbox, circuits and counts, on SQLite and a real PostgreSQL: replies come with
the blips they answer and the parts already posted; noting a post is idempotent, also when processes race."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from blipflow.control import tables
from blipflow.control.blips import Blips
from blipflow.control.circuits import Circuit, Circuits
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import BlipFacts
from blipflow.control.ledger import Ledger
from blipflow.control.outbox import Outbox
from blipflow.model.refs import AnsweredBlip, Ref
from tests.support.control_plane import note_post
from tests.support.racing import racing

ROOT = "at://did:plc:root/stream.thought.blip/3kroot"


def answered_window(control: ControlPlane, replies: list[str]) -> str:
    """A window of two blips (the newer one in a thread, one without a cid) answered with `replies`."""
    blips, ledger = Blips(control), Ledger(control)
    blips.add([BlipFacts("at://did:plc:a/stream.thought.blip/1", "did:plc:a", 20, cid="bafy1", content="one",
                         root_uri=ROOT, root_cid="bafyroot"),
               BlipFacts("at://did:plc:a/stream.thought.blip/0", "did:plc:a", 10, cid="bafy0", content="zero"),
               BlipFacts("at://did:plc:a/stream.thought.blip/2", "did:plc:a", 30, content="no cid")])
    window_id = ledger.decide("scout", {}, [f"at://did:plc:a/stream.thought.blip/{n}" for n in (0, 1, 2)])
    ledger.finish_window(window_id, "scout", replies, 50.0)
    return window_id


def test_replies_come_with_the_blips_they_answer_and_the_parts_posted(control: ControlPlane) -> None:
    window_id = answered_window(control, ["a long reply", "a short one"])
    outbox = Outbox(control)
    first, second = outbox.replies(10)
    assert (first.id, first.position, first.state, second.position) == (f"{window_id}:0", 0, "queued", 1)
    assert first.answers == (AnsweredBlip("at://did:plc:a/stream.thought.blip/0", "bafy0"),
                             AnsweredBlip("at://did:plc:a/stream.thought.blip/1", "bafy1", ROOT, "bafyroot"))
    with control.reading() as session:
        created_at = session.get(tables.Reply, first.id).created_at
    assert datetime.fromtimestamp(first.created_us / 1e6, timezone.utc) - created_at < timedelta(microseconds=1)
    assert first.created_us % 1_000_000 == created_at.microsecond  # exact: record keys are made of it

    outbox.record_post(first.id, 0, "scout.test", "at://did:plc:scout/stream.thought.blip/p0", "bafyp0", last=False)
    outbox.record_post(first.id, 1, "scout.test", "at://did:plc:scout/stream.thought.blip/p1", "bafyp1", last=True)
    assert [r.id for r in outbox.replies(10)] == [second.id]
    [posted] = outbox.replies(1, first.id)  # looked up by id whatever its state
    assert posted.state == "posted"
    assert posted.posted == (Ref("at://did:plc:scout/stream.thought.blip/p0", "bafyp0"),
                             Ref("at://did:plc:scout/stream.thought.blip/p1", "bafyp1"))
    assert outbox.posts_since("scout.test", datetime.now(timezone.utc) - timedelta(minutes=1)) == 2
    assert outbox.posts_since("scout.test", datetime.now(timezone.utc) + timedelta(seconds=1)) == 0

    outbox.fail_reply(second.id, "the PDS refused it: 400")
    assert outbox.replies(10) == []
    [failed] = outbox.replies(1, second.id)
    assert failed.state == "failed"


def test_noting_a_post_twice_keeps_the_first(control: ControlPlane) -> None:
    window_id = answered_window(control, ["hello"])
    outbox = Outbox(control)
    outbox.record_post(f"{window_id}:0", 0, "scout.test", "at://did:plc:scout/stream.thought.blip/x", "bafyx", last=True)
    outbox.record_post(f"{window_id}:0", 0, "scout.test", "at://did:plc:scout/stream.thought.blip/y", "bafyy", last=True)
    [reply] = outbox.replies(1, f"{window_id}:0")
    assert reply.posted == (Ref("at://did:plc:scout/stream.thought.blip/x", "bafyx"),)


@pytest.mark.process
def test_processes_noting_the_same_post_at_once_keep_one(control: ControlPlane, control_url: str) -> None:
    window_id = answered_window(control, ["hello"])
    noted = {report["uri"] for report in racing(
        note_post, [(control_url, f"{window_id}:0", f"at://did:plc:scout/stream.thought.blip/r{n}") for n in range(4)])}
    with control.reading() as session:
        posts = session.scalars(select(tables.Post)).all()
    assert len(noted) == 4 and len(posts) == 1 and posts[0].uri in noted
    assert Outbox(control).replies(10) == []


def test_circuits_are_saved_and_read_back_by_agent(control: ControlPlane) -> None:
    circuits = Circuits(control)
    opened = datetime(2026, 12, 6, 12, 0, 0, 250000, tzinfo=timezone.utc)
    circuits.save("scout", Circuit("open", 5, opened, "Letta answered 503"))
    circuits.save("ada", Circuit("closed", 0, None, None))
    circuits.save("scout", Circuit("half_open", 5, opened, "Letta answered 503"))
    assert circuits.all() == {"ada": Circuit("closed", 0, None, None),
                              "scout": Circuit("half_open", 5, opened, "Letta answered 503")}
