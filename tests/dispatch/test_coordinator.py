"""Coordination inside dispatch, on SQLite and a real PostgreSQL: the blips fed are decided for every agent
at once, with the reasons, in rounds that carry the state on — and when processes race to coordinate the
same blips, each (agent, blip) is decided exactly once and no round's state is lost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from blipflow.config import AgentConfig
from blipflow.control import tables
from blipflow.control.blips import Blips
from blipflow.control.coordination import Coordination
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import BlipFacts
from blipflow.control.ledger import Ledger
from blipflow.dispatch.coordinator import Coordinator
from blipflow.model.coordination_policy import CoordinationPolicy
from blipflow.operations.why import why
from tests.support.control_plane import coordinate_everything
from tests.support.racing import racing

HUMAN = "did:plc:human"
AGENTS = [{"name": "ada", "agent_id": "a-1", "did": "did:plc:ada", "handle": "ada.test", "skills": ["postgres"]},
          {"name": "bo", "agent_id": "a-2", "did": "did:plc:bo", "handle": "bo.test", "skills": ["rust"]},
          {"name": "cy", "agent_id": "a-3", "did": "did:plc:cy", "handle": "cy.test"}]


def uri(did: str, n: int) -> str:
    return f"at://{did}/stream.thought.blip/3k{n:05d}"


def blip(n: int, content: str, did: str = HUMAN, parent: str | None = None, root: str | None = None,
         **fields) -> BlipFacts:
    reply = {"root_uri": root or parent, "root_cid": "bafyr", "parent_uri": parent, "parent_cid": "bafyp"} if parent else {}
    return BlipFacts(uri(did, n), did, 1_000 + n, cid=f"bafy{n}", content=content, **reply, **fields)


def coordinator(control: ControlPlane, **policy) -> Coordinator:
    return Coordinator(control, [AgentConfig(**agent) for agent in AGENTS], CoordinationPolicy(**policy))


def decided(control: ControlPlane, blip_uri: str) -> dict[str, str]:
    return {record.agent: record.handed_for or record.skip_reason for record in Ledger(control).decisions_of(blip_uri)}


def test_each_blip_is_decided_for_every_agent_with_its_reason(control: ControlPlane) -> None:
    Blips(control).add([blip(1, "who knows #postgres?"), blip(2, "hello @bo.test", mentions=("did:plc:bo",))])
    Blips(control).add([blip(3, "it is VACUUM", did="did:plc:ada", parent=uri(HUMAN, 1))])
    assert coordinator(control, strategy="relevance", k=1).step(datetime.now(timezone.utc)) == 3

    assert decided(control, uri(HUMAN, 1)) == {"ada": "selected", "bo": "not_selected", "cy": "not_selected"}
    assert decided(control, uri(HUMAN, 2)) == {"ada": "not_selected", "bo": "mentioned", "cy": "not_selected"}
    assert decided(control, uri("did:plc:ada", 3)) == {"ada": "own_blip", "bo": "not_selected", "cy": "not_selected"}
    assert [c.uri for c in Ledger(control).handed_unsent("ada", 10)] == [uri(HUMAN, 1)]
    [record] = [r for r in Ledger(control).decisions_of(uri(HUMAN, 1)) if r.agent == "bo"]
    assert (record.strategy, record.detail) == ("relevance", "not selected by relevance")


def test_the_state_carries_over_rounds_and_processes(control: ControlPlane) -> None:
    """A thread's turns counted in one round (and by one process) bound the next round (in another)."""
    Blips(control).add([blip(1, "tell me about #rust")])
    first = coordinator(control, strategy="broadcast", max_turns_per_agent=1)
    first.step(datetime.now(timezone.utc))
    Blips(control).add([blip(2, "Ownership.", did="did:plc:bo", parent=uri(HUMAN, 1)),
                        blip(3, "and lifetimes?", parent=uri("did:plc:bo", 2), root=uri(HUMAN, 1))])
    assert coordinator(control, strategy="broadcast", max_turns_per_agent=1).step(datetime.now(timezone.utc)) == 2
    assert decided(control, uri(HUMAN, 3)) == {"ada": "selected", "bo": "agent_turns_used", "cy": "selected"}
    assert first.step(datetime.now(timezone.utc)) == 0  # nothing new: the first process finds it all decided


def test_an_agent_joins_at_the_backlog_of_the_deployment(control: ControlPlane) -> None:
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    Blips(control).add([blip(1, "long ago")], stored_at=old)
    Blips(control).add([blip(2, "just now")])
    coordinator(control).step(datetime.now(timezone.utc))  # backlog_seconds: 600 by default
    assert decided(control, uri(HUMAN, 1)) == {}
    assert set(decided(control, uri(HUMAN, 2))) == {"ada", "bo", "cy"}


@pytest.mark.process
def test_processes_racing_to_coordinate_decide_each_pair_once(control: ControlPlane, control_url: str) -> None:
    count = 300
    Blips(control).add([blip(n, f"blip {n} #rust" if n % 3 else f"@ada.test blip {n}") for n in range(1, count + 1)])
    policy = {"strategy": "round_robin", "k": 1, "queue_length": 0}  # no one queued: every decision final at once
    reports = racing(coordinate_everything, [(control_url, AGENTS, policy)] * 3)

    with control.reading() as session:
        pairs = session.execute(select(func.count(), func.count(func.distinct(tables.Delivery.blip_uri)))).one()
        handed: dict[str, dict[str, int]] = {}
        for reason, agent, number in session.execute(
                select(tables.Delivery.handed_for, tables.Delivery.agent, func.count())
                .where(tables.Delivery.skip_reason.is_(None)).group_by(tables.Delivery.handed_for, tables.Delivery.agent)):
            handed.setdefault(reason, {})[agent] = number
    assert tuple(pairs) == (3 * count, count)  # every agent, every blip, once
    assert sum(report["decided"] for report in reports) == count  # no blip decided by two processes' rounds
    position = Coordination(control).position(datetime.now(timezone.utc))
    assert position.through_seq == count
    # round_robin's rotation went on across rounds and processes: the unaddressed blips went round evenly
    assert handed["mentioned"] == {"ada": count // 3}
    assert sorted(handed["selected"].values()) == [66, 67, 67]


def test_the_next_in_line_is_handed_the_blip_once_the_speaker_stayed_silent(control: ControlPlane) -> None:
    Blips(control).add([blip(1, "who knows #postgres?")])
    coordinating = coordinator(control, strategy="round_robin", k=1, queue_length=1, turn_timeout=30)
    now = datetime.now(timezone.utc)
    coordinating.step(now)
    first = decided(control, uri(HUMAN, 1))
    [queued] = {"ada", "bo", "cy"} - set(first)
    assert sorted(first.values()) == ["not_selected", "selected"]
    [verdict] = [v for v in why(control, uri(HUMAN, 1), ["ada", "bo", "cy"]) if v.agent == queued]
    assert (verdict.outcome, verdict.reason) == ("waiting", "queued")

    assert coordinating.step(now + timedelta(seconds=29)) == 0 and queued not in decided(control, uri(HUMAN, 1))
    coordinating.step(now + timedelta(seconds=31))  # the speaker stayed silent through its turn
    assert decided(control, uri(HUMAN, 1))[queued] == "floor_passed"
