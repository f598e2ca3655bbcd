"""Attention in each agent: its dialogues ranked, and a budget of blips per minute.

Addressed blips and replies to the agent's own blips are never dropped for the budget (they count
against it); lower-ranked ones are, and a blip of a higher rank arriving in the same round is served
before a lower one takes the last of the budget.
"""

from __future__ import annotations

from enum import IntEnum

from blipflow.coordination.addressing import Address
from blipflow.coordination.facts import BlipFacts
from blipflow.coordination.state import AgentState, ThreadState

BUDGET_WINDOW = 60.0  # seconds: the budget is per minute


class Rank(IntEnum):
    ADDRESSED = 0
    ANSWERED = 1  # a reply to one of its own blips
    ROOM = 2  # a blip in one of its rooms (rooms come with the next issue)
    TOOK_PART = 3  # a thread it spoke in
    OPEN_STREAM = 4


EXEMPT = (Rank.ADDRESSED, Rank.ANSWERED)


def rank(agent: str, facts: BlipFacts, address: Address | None, thread: ThreadState,
         rooms: frozenset[str] = frozenset()) -> Rank:
    if address is Address.MENTIONED:
        return Rank.ADDRESSED
    if address is Address.ANSWERED:
        return Rank.ANSWERED
    if facts.room is not None and facts.room in rooms:
        return Rank.ROOM
    if agent in thread.turns:
        return Rank.TOOK_PART
    return Rank.OPEN_STREAM


def recent(agent: AgentState, now: float) -> tuple[float, ...]:
    """When it was handed blips within the last minute."""
    handed = agent.handed_at
    if handed and handed[0] <= now - BUDGET_WINDOW:
        handed = tuple(moment for moment in handed if moment > now - BUDGET_WINDOW)
    return handed


def over_budget(per_minute: int | None, handed_recently: int, reserved_ahead: int, of_rank: Rank) -> bool:
    """Whether a blip of this rank would exceed the budget, with `reserved_ahead` higher-ranked blips
    of the same round still to be served first."""
    if per_minute is None or of_rank in EXEMPT:
        return False
    return handed_recently + reserved_ahead >= per_minute
