"""Who is sent what, and when: the one place where dispatch decides.

Given an agent and the blips it has not been handed yet (oldest first), the policy says which of them
it will never get (its own, authors it does not follow, agent-only chains that went on too long) and
which window, if any, to send it now. Coordination between agents — attention, turn-taking, rooms,
routing by skill — belongs here too, so the flows and the store stay free of such rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from blipflow.config import AgentConfig
from blipflow.model.blip import Candidate

# Why a blip is never sent to an agent (stored in the ledger, so it is decided once).
OWN_BLIP = "own_blip"
NOT_WANTED = "author_not_wanted"
CHAIN_TOO_DEEP = "agent_chain_too_deep"


@dataclass(frozen=True)
class Decision:
    skips: dict[str, str] = field(default_factory=dict)  # uri → why the agent never gets it
    window: list[str] = field(default_factory=list)  # uris to send now, oldest first; empty: nothing yet
    held: str | None = None  # why a window that is ready waits


def decide(
    agent: AgentConfig, candidates: Sequence[Candidate], *, replies_last_minute: int, now: datetime
) -> Decision:
    skips: dict[str, str] = {}
    eligible: list[Candidate] = []
    for candidate in candidates:
        reason = exclusion(agent, candidate)
        if reason is None:
            eligible.append(candidate)
        else:
            skips[candidate.uri] = reason
    window = ready_window(agent, eligible, now)
    if window and replies_last_minute >= agent.max_replies_per_minute:
        held = f"{agent.name} answered {replies_last_minute} times in the last minute (limit {agent.max_replies_per_minute})"
        return Decision(skips, [], held)
    return Decision(skips, [candidate.uri for candidate in window])


def exclusion(agent: AgentConfig, candidate: Candidate) -> str | None:
    if agent.did is not None and candidate.did == agent.did:
        return OWN_BLIP
    if agent.wanted_dids and candidate.did not in agent.wanted_dids:
        return NOT_WANTED
    if candidate.chain_depth >= agent.max_chain_depth:
        return CHAIN_TOO_DEEP
    return None


def ready_window(agent: AgentConfig, eligible: list[Candidate], now: datetime) -> list[Candidate]:
    """A full window of `batch_size`, or a partial one once its oldest blip has waited `max_wait_seconds`."""
    if len(eligible) >= agent.batch_size:
        return eligible[: agent.batch_size]
    if eligible and now - eligible[0].arrived >= timedelta(seconds=agent.max_wait_seconds):
        return eligible
    return []
