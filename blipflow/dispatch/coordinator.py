"""Coordination in dispatch: the blips fed since the last round are decided for every agent at once by
`blipflow.coordination.coordinate`, and its final decisions — handed or skipped, each with its reason —
go into the ledger, where dispatch opens each agent's windows from what it was handed.

Every dispatch process may run a round; the control plane keeps the one that writes first (see
`blipflow.control.coordination`), so each (agent, blip) is decided once whichever process decides it.
An agent added to a running deployment takes part from the next blip coordinated; the deployment's
first round starts with the blips stored `backlog_seconds` (the longest of its agents') before it.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from blipflow.config import AgentConfig
from blipflow.control.coordination import Coordination, Decided, NewBlip, Position
from blipflow.control.engine import ControlPlane
from blipflow.coordination.coordinate import coordinate
from blipflow.coordination.decisions import Outcome
from blipflow.coordination.facts import BlipFacts, blip_facts
from blipflow.coordination.participants import roster
from blipflow.coordination.state import CoordinationState, state_from_dict
from blipflow.dispatch.moderation import Moderator
from blipflow.letta.gateway import LettaGateway
from blipflow.model.coordination_policy import CoordinationPolicy
from blipflow.model.formatting import counted

BLIPS_PER_ROUND = 256
log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, plane: ControlPlane, agents: list[AgentConfig], policy: CoordinationPolicy,
                 gateway: LettaGateway | None = None) -> None:
        """`gateway`: where the moderator is asked, with the `moderator` strategy (which needs one)."""
        self.store = Coordination(plane)
        self.policy = policy
        self.roster = roster(agents, policy.known_agents, moderator=policy.moderator)
        self.moderator: Moderator | None = None
        if policy.strategy == "moderator":
            if gateway is None:
                raise ValueError("the moderator strategy needs a Letta gateway to ask the moderator through")
            chair = next(agent for agent in agents if agent.name == policy.moderator)
            self.moderator = Moderator(gateway.with_timeout(policy.moderator_timeout), chair, self.roster)
        self.agent_dids = sorted({*self.roster.by_did, *policy.known_agents})
        self.backlog = timedelta(seconds=max((agent.backlog_seconds for agent in agents), default=0.0))
        self.known: tuple[int, CoordinationState] | None = None  # the state as this process last read or wrote it

    def step(self, now: datetime) -> int:
        """Decide the blips fed since the last round, and end the turns on a floor that ran out; returns
        how many blips were decided here (0 also when another process decided them first)."""
        read = self.store.position(now - self.backlog, self.known[0] if self.known else None)
        state = self.state_at(read)
        blips = self.store.new_blips(read.through_seq, self.agent_dids, BLIPS_PER_ROUND)
        moment = now.timestamp()
        if not blips and not any(due <= moment for due in state.floors_due.values()):
            self.known = (read.version, state)
            return 0
        facts = [self.facts_of(blip) for blip in blips]
        answers = None
        if self.moderator is not None:  # asked about each blip that opens a floor, as the strategy will weigh it
            answers = {new.facts.uri: self.moderator.ask(new.facts) for new, weighed in zip(blips, facts)
                       if weighed.author_agent is None}
        round = coordinate(facts, self.roster, state, self.policy, moment, answers)
        decided = [Decided(decision.agent, decision.uri,
                           decision.reason.value if decision.outcome is Outcome.HANDED else None,
                           decision.reason.value if decision.outcome is Outcome.SKIPPED else None,
                           decision.strategy, decision.detail)
                   for decision in round.decisions if decision.final]
        through = blips[-1].seq if blips else read.through_seq
        if not self.store.record(decided, read, through, round.state.as_dict()):
            self.known = None
            return 0
        self.known = (read.version + 1, round.state)
        if decided:
            log.info("decided %s: %s", counted(len(blips), "new blip"), reasons_told(decided))
        return len(blips)

    def state_at(self, read: Position) -> CoordinationState:
        if read.state is None and self.known is not None:  # unchanged since this process last saw it
            return self.known[1]
        return state_from_dict(read.state) if read.state else CoordinationState()

    def facts_of(self, blip: NewBlip) -> BlipFacts:
        return blip_facts(blip.facts, at=blip.stored_at.timestamp(), roster=self.roster,
                          parent_depth=blip.chain_depth - 1 if blip.chain_depth else None)


def reasons_told(decided: list[Decided]) -> str:
    """`handed 3 (2 mentioned, 1 selected), skipped 5 (5 not_selected)`: a round's decisions in a log line."""
    parts = []
    for outcome, reasons in (("handed", Counter(row.handed_for for row in decided if row.handed_for)),
                             ("skipped", Counter(row.skip_reason for row in decided if row.skip_reason))):
        if reasons:
            told = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
            parts.append(f"{outcome} {sum(reasons.values())} ({told})")
    return ", ".join(parts)
