"""Blips for coordination tests, written as records the way clients write them, read into facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count

from blipflow.coordination.coordinate import Round, coordinate
from blipflow.coordination.decisions import Decision, Outcome
from blipflow.coordination.facts import BlipFacts, record_facts
from blipflow.coordination.participants import Participant, Roster
from blipflow.coordination.state import CoordinationState
from blipflow.model.coordination_policy import CoordinationPolicy

ROSTER = Roster.of(
    [Participant("ada", "did:plc:ada", "ada.test", frozenset({"postgres"})),
     Participant("bo", "did:plc:bo", "bo.test", frozenset({"rust"}), frozenset({"cooking"})),
     Participant("cy", "did:plc:cy", "cy.test", frozenset({"music"}))],
    other_agent_dids=["did:plc:outsider"],
)
PERSON = "did:plc:person"
SERIAL = count()


def record(content: str, parent: BlipFacts | None = None, facets: list | None = None) -> dict:
    data: dict = {"content": content, "createdAt": "2025-09-10T22:27:13.262Z"}
    if parent is not None:
        data["reply"] = {"root": {"uri": parent.root, "cid": "c"}, "parent": {"uri": parent.uri, "cid": "c"}}
    if facets:
        data["facets"] = facets
    return data


def blip(did: str, content: str, *, at: float, parent: BlipFacts | None = None, facets: list | None = None,
         roster: Roster = ROSTER) -> BlipFacts:
    uri = f"at://{did}/stream.thought.blip/{next(SERIAL):06d}"
    return record_facts(uri, did, record(content, parent, facets), at=at, roster=roster,
                      parent_depth=parent.chain_depth if parent is not None else None)


@dataclass
class Chat:
    """A conversation fed to `coordinate` one call at a time, keeping the state between calls."""

    policy: CoordinationPolicy
    roster: Roster = ROSTER
    state: CoordinationState = field(default_factory=CoordinationState)
    rounds: list[Round] = field(default_factory=list)

    def feed(self, blips: Sequence[BlipFacts] | BlipFacts, now: float | None = None,
             moderator_answers: dict | None = None) -> Round:
        blips = [blips] if isinstance(blips, BlipFacts) else list(blips)
        now = now if now is not None else max(b.at for b in blips)
        round = coordinate(blips, self.roster, self.state, self.policy, now, moderator_answers)
        self.state = round.state
        self.rounds.append(round)
        return round

    def tick(self, now: float) -> Round:
        return self.feed([], now)

    @property
    def decisions(self) -> list[Decision]:
        return [decision for round in self.rounds for decision in round.decisions]

    def handed(self, uri: str) -> list[str]:
        return [d.agent for d in self.decisions if d.uri == uri and d.outcome is Outcome.HANDED]

    def latest(self, agent: str, uri: str) -> Decision:
        return [d for d in self.decisions if d.agent == agent and d.uri == uri][-1]

    def decision(self, agent: str, uri: str) -> Decision:
        [final] = [d for d in self.decisions if d.agent == agent and d.uri == uri and d.final]
        return final
