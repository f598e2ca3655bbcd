"""Dispatch policy: when a window of what coordination handed an agent is ready (who is handed what is
tests/coordination's)."""

from datetime import datetime, timedelta, timezone

from blipflow.config import AgentConfig
from blipflow.coordination.policy import decide
from blipflow.model.blip import Candidate

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
AGENT = "did:plc:agent"


def agent(**settings) -> AgentConfig:
    return AgentConfig(name="scout", agent_id="agent-1", did=AGENT, **settings)


def candidate(name: str, did: str = "did:plc:human", waited: float = 0.0) -> Candidate:
    return Candidate(f"at://{did}/stream.thought.blip/{name}", did, NOW - timedelta(seconds=waited))


def uris(*candidates: Candidate) -> list[str]:
    return [c.uri for c in candidates]


def test_a_full_window_goes_at_once_oldest_first():
    blips = [candidate(f"b{i}") for i in range(5)]
    decision = decide(agent(batch_size=2), blips, replies_last_minute=0, now=NOW)
    assert decision.window == uris(*blips[:2])
    assert decision.held is None


def test_a_partial_window_waits_until_its_oldest_has_waited_max_wait():
    fresh = [candidate("b0", waited=5), candidate("b1", waited=1)]
    assert decide(agent(batch_size=3, max_wait_seconds=10), fresh, replies_last_minute=0, now=NOW).window == []
    stale = [candidate("b0", waited=10), candidate("b1", waited=1)]
    assert decide(agent(batch_size=3, max_wait_seconds=10), stale, replies_last_minute=0, now=NOW).window == uris(*stale)


def test_a_ready_window_is_held_while_the_agent_is_over_its_reply_rate():
    blips = [candidate("b0")]
    held = decide(agent(max_replies_per_minute=3), blips, replies_last_minute=3, now=NOW)
    assert held.window == [] and "scout answered 3 times in the last minute (limit 3)" == held.held
    assert decide(agent(max_replies_per_minute=3), blips, replies_last_minute=2, now=NOW).window == uris(*blips)
