"""Speaker selection per thread: who among the eligible candidates is granted the floor for a blip.

Each strategy only orders and cuts the candidates it is given, so it cannot name an agent that does not
exist or is not eligible; `choose` checks that anyway and raises on a strategy that tries. Every
strategy name the policy accepts has its function here (checked at import), so none is silently ignored.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from blipflow.coordination.facts import BlipFacts
from blipflow.coordination.moderator import validate
from blipflow.coordination.participants import Roster
from blipflow.coordination.relevance import UNRELATED, fit
from blipflow.coordination.state import AgentState, ThreadState
from blipflow.model.coordination_policy import STRATEGY_NAMES, CoordinationPolicy


@dataclass(frozen=True, slots=True)
class Pick:
    """What a strategy chooses from."""

    facts: BlipFacts
    candidates: tuple[str, ...]  # eligible and not addressed, in roster order
    slots: int  # how many it may grant the floor
    opens_floor: bool  # a person's (or an outside agent's) blip: someone should answer it
    anyone_addressed: bool
    policy: CoordinationPolicy
    roster: Roster
    thread: ThreadState
    agents: Mapping[str, AgentState]
    rotation: int
    queue_length: int  # how many may wait next in line (none for an agent's blip: it opens no floor)
    moderator_answer: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    speakers: tuple[str, ...]
    queue: tuple[str, ...] = ()
    note: str = ""
    rotation: int | None = None  # round_robin's next position, when it moved


def broadcast(pick: Pick) -> Choice:
    return Choice(pick.candidates)


def round_robin(pick: Pick) -> Choice:
    names = pick.roster.names
    eligible = set(pick.candidates)
    turn = [(pick.rotation + step) % len(names) for step in range(len(names))]
    ordered = [position for position in turn if names[position] in eligible]
    speakers = ordered[:pick.slots]
    queue = ordered[pick.slots:pick.slots + pick.queue_length]
    rotation = (speakers[-1] + 1) % len(names) if speakers else None
    return Choice(tuple(names[p] for p in speakers), tuple(names[p] for p in queue), rotation=rotation)


def seeded_random(pick: Pick) -> Choice:
    # Seeded by the policy and the blip: replaying the same history draws the same speakers.
    shuffled = list(pick.candidates)
    random.Random(f"{pick.policy.seed}:{pick.facts.uri}").shuffle(shuffled)
    return Choice(tuple(shuffled[:pick.slots]), tuple(shuffled[pick.slots:pick.slots + pick.queue_length]))


def relevance(pick: Pick) -> Choice:
    positions = {name: position for position, name in enumerate(pick.roster.names)}
    fits = sorted(
        fit(pick.roster.by_name[name], positions[name], pick.facts, None, pick.thread,
            pick.agents.get(name) or AgentState()) + (name,)
        for name in pick.candidates
    )
    relevant = [key[-1] for key in fits if key[0] < UNRELATED]
    queue_length = pick.queue_length
    if relevant:
        return Choice(tuple(relevant[:pick.slots]), tuple(relevant[pick.slots:pick.slots + queue_length]))
    if pick.opens_floor and not pick.anyone_addressed and fits:
        # Nobody is fit, yet a person asked: the one chosen least recently answers (and nobody unfit waits).
        return Choice((fits[0][-1],), note="nobody relevant: the agent chosen least recently")
    return Choice((), note="nobody relevant")


def sequential(pick: Pick) -> Choice:
    eligible = set(pick.candidates)
    order = [name for name in (pick.policy.order or pick.roster.names) if name in eligible]
    if not order:
        return Choice((), note="nobody in the order is eligible")
    if not pick.opens_floor:
        return Choice(tuple(order[:pick.slots]))
    return Choice(tuple(order[:1]), tuple(order[1:]))  # everyone in turn: the queue is the whole order


def moderated(pick: Pick) -> Choice:
    verdict = validate(pick.moderator_answer, pick.candidates, pick.roster)
    if verdict.speakers:
        return Choice(verdict.speakers, note=verdict.note)
    fallback = relevance(pick)
    note = f"fell back to relevance: {verdict.note}" + (f"; {fallback.note}" if fallback.note else "")
    return Choice(fallback.speakers, fallback.queue, note=note)


Strategy = Callable[[Pick], Choice]
STRATEGIES: dict[str, Strategy] = {
    "broadcast": broadcast,
    "round_robin": round_robin,
    "random": seeded_random,
    "relevance": relevance,
    "moderator": moderated,
    "sequential": sequential,
}
if set(STRATEGIES) != set(STRATEGY_NAMES):  # a strategy the policy accepts must never be silently ignored
    raise ImportError(f"strategies {sorted(set(STRATEGY_NAMES) ^ set(STRATEGIES))} are named but not implemented")


def choose(pick: Pick) -> Choice:
    """The policy's strategy applied; raises ValueError if it named anyone but an eligible candidate, or twice."""
    choice = STRATEGIES[pick.policy.strategy](pick)
    chosen = choice.speakers + choice.queue
    if len(set(chosen)) != len(chosen) or not set(chosen) <= set(pick.candidates):
        raise ValueError(f"strategy {pick.policy.strategy} chose {chosen} from {pick.candidates}")
    if not pick.opens_floor and choice.queue:
        raise ValueError(f"strategy {pick.policy.strategy} queued {choice.queue} for a blip that opens no floor")
    return choice if choice.speakers else Choice((), note=choice.note, rotation=choice.rotation)
