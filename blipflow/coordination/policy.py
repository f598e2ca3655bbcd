"""When an agent is sent what coordination handed it: windows of `batch_size`, a partial one once its
oldest blip has waited `max_wait_seconds`, and none while the agent is over its reply rate.

Who is handed which blip is decided before, for every agent at once (`coordinate`); this is the one
place where dispatch decides when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from blipflow.config import AgentConfig
from blipflow.model.blip import Candidate


@dataclass(frozen=True)
class Decision:
    window: list[str] = field(default_factory=list)  # uris to send now, oldest first; empty: nothing yet
    held: str | None = None  # why a window that is ready waits


def decide(
    agent: AgentConfig, handed: Sequence[Candidate], *, replies_last_minute: int, now: datetime
) -> Decision:
    window = ready_window(agent, handed, now)
    if window and replies_last_minute >= agent.max_replies_per_minute:
        held = f"{agent.name} answered {replies_last_minute} times in the last minute (limit {agent.max_replies_per_minute})"
        return Decision([], held)
    return Decision([candidate.uri for candidate in window])


def candidates_needed(agent: AgentConfig) -> int:
    """How many of the oldest blips handed to the agent `decide` looks at: a window is never more than a
    batch, so reading more of them (a backlog of hundreds, say) would only be thrown away."""
    return agent.batch_size


def ready_window(agent: AgentConfig, handed: Sequence[Candidate], now: datetime) -> Sequence[Candidate]:
    """A full window of `batch_size`, or a partial one once its oldest blip has waited `max_wait_seconds`."""
    if len(handed) >= agent.batch_size:
        return handed[: agent.batch_size]
    if handed and now - handed[0].arrived >= timedelta(seconds=agent.max_wait_seconds):
        return handed
    return []
