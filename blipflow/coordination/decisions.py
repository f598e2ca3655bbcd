"""Decisions: for each (agent, blip), handed or skipped, always with the reason — the ledger's words.

A `waiting` decision is provisional (the agent is queued for the thread's floor); it becomes handed or
skipped later, and only those two are final: every (agent, blip) gets exactly one final decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


class Outcome(str, Enum):
    HANDED = "handed"
    SKIPPED = "skipped"
    WAITING = "waiting"


class Reason(str, Enum):
    # handed
    MENTIONED = "mentioned"
    ANSWERED = "answered"
    SELECTED = "selected"  # by the thread's strategy (the strategy is in `strategy`)
    FLOOR_PASSED = "floor_passed"  # was queued; its turn came
    # waiting
    QUEUED = "queued"
    # skipped, by a hard bound (addressing does not override these)
    OWN_BLIP = "own_blip"
    AUTHOR_NOT_WANTED = "author_not_wanted"  # the agent listens only to some authors (its `wanted_dids`)
    THREAD_CLOSED = "thread_closed"
    AGENT_TURNS_USED = "agent_turns_used"
    CHAIN_TOO_DEEP = "agent_chain_too_deep"
    # skipped, by selection (addressing overrides these)
    NOT_SELECTED = "not_selected"
    NOT_YOUR_TURN = "not_your_turn"
    REPEAT_SPEAKER = "repeat_speaker"
    COOLING_DOWN = "cooling_down"
    OVER_ATTENTION_BUDGET = "over_attention_budget"


HARD_BOUNDS = frozenset({Reason.OWN_BLIP, Reason.AUTHOR_NOT_WANTED, Reason.THREAD_CLOSED, Reason.AGENT_TURNS_USED, Reason.CHAIN_TOO_DEEP})


@dataclass(frozen=True, slots=True)
class Decision:
    agent: str
    uri: str
    outcome: Outcome
    reason: Reason
    strategy: str
    detail: str = ""  # for people: which bound, which fallback, whose turn

    @property
    def final(self) -> bool:
        return self.outcome is not Outcome.WAITING

    def row(self) -> dict[str, str]:
        return {key: getattr(value, "value", value) for key, value in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Selection:
    """Whom a thread's strategy chose for one blip, and why nobody when nobody."""

    uri: str
    strategy: str
    speakers: tuple[str, ...]  # granted the floor, in order
    queue: tuple[str, ...]  # next in line should a speaker stay silent (or, for `sequential`, after each turn)
    note: str = ""  # a fallback taken, or why nobody speaks
