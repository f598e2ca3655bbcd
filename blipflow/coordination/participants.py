"""Who takes part: our agents as coordination sees them, and which authors are agents at all."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

from blipflow.config import AgentConfig


class AuthorKind(str, Enum):
    PERSON = "person"
    OUR_AGENT = "our_agent"
    OTHER_AGENT = "other_agent"  # an agent we know of that is not ours (it counts in agent-only chains)


@dataclass(frozen=True, slots=True)
class Participant:
    """One of our agents: its name, account, what it is good at (lowercase, without '#') and the bounds it
    sets for itself: the authors it listens to (empty: everyone) and the agent-only chains it leaves alone."""

    name: str
    did: str | None = None
    handle: str | None = None
    skills: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    wanted_dids: frozenset[str] = frozenset()
    max_chain_depth: int | None = None  # None: the policy's bound alone

    @property
    def topics(self) -> frozenset[str]:
        return self.skills | self.tags


def participant(agent: AgentConfig) -> Participant:
    return Participant(agent.name, agent.did, agent.handle, frozenset(agent.skills), frozenset(agent.tags),
                       frozenset(agent.wanted_dids), agent.max_chain_depth)


@dataclass(frozen=True)
class Roster:
    """Our agents in a fixed order, and the DIDs of other agents we know of."""

    agents: tuple[Participant, ...]
    other_agent_dids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        names = [agent.name for agent in self.agents]
        if len(set(names)) != len(names):
            raise ValueError(f"agent names must be unique: {names}")

    @classmethod
    def of(cls, agents: Iterable[Participant], other_agent_dids: Iterable[str] = ()) -> Roster:
        return cls(tuple(agents), frozenset(other_agent_dids))

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(agent.name for agent in self.agents)

    @cached_property
    def by_name(self) -> dict[str, Participant]:
        return {agent.name: agent for agent in self.agents}

    @cached_property
    def by_did(self) -> dict[str, str]:
        return {agent.did: agent.name for agent in self.agents if agent.did}

    @cached_property
    def by_handle(self) -> dict[str, str]:
        return {agent.handle.lower(): agent.name for agent in self.agents if agent.handle}

    @cached_property
    def own_bounds(self) -> tuple[int | None, bool]:
        """The lowest chain bound any agent sets for itself (None: none does), and whether any listens
        only to some authors: most blips need no agent's own bounds looked at."""
        depths = [agent.max_chain_depth for agent in self.agents if agent.max_chain_depth is not None]
        return (min(depths) if depths else None), any(agent.wanted_dids for agent in self.agents)

    def kind_of(self, did: str) -> AuthorKind:
        if did in self.by_did:
            return AuthorKind.OUR_AGENT
        if did in self.other_agent_dids:
            return AuthorKind.OTHER_AGENT
        return AuthorKind.PERSON


def roster(agents: Sequence[AgentConfig], other_agent_dids: Iterable[str] = (), *, moderator: str | None = None) -> Roster:
    """Our agents that take part; a `moderator` chooses who speaks and is not one of them."""
    return Roster.of((participant(agent) for agent in agents if agent.name != moderator), other_agent_dids)
