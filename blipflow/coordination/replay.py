"""Replay: run a recorded history through a policy without calling Letta, and price it.

The history is the blips in time order, with our agents' recorded replies among them. People's blips
(and outside agents') arrive when they did. A recorded reply stands in only when the policy hands its
agent the blip it answers — then it arrives as long after the hand-over as it did after that blip in
the recording; any other recorded reply is one the policy would not have caused, and is dropped with
every agent reply below it. A later blip whose parent was dropped answers the nearest ancestor kept.
Floors whose speakers stay silent pass at their deadlines, as they would live.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from blipflow.coordination.addressing import addressed_agents
from blipflow.coordination.coordinate import coordinate
from blipflow.coordination.decisions import HARD_BOUNDS, Decision, Outcome, Reason
from blipflow.coordination.facts import BlipFacts, chain_depth
from blipflow.coordination.participants import Roster
from blipflow.coordination.replay_report import ReplayReport
from blipflow.coordination.state import CoordinationState
from blipflow.model.coordination_policy import CoordinationPolicy

Progress = Callable[[int, int], None]  # (blips replayed, blips in the history)


def replay(
    history: Iterable[BlipFacts], roster: Roster, policy: CoordinationPolicy, *,
    moderator_answers: Mapping[str, Sequence[str] | None] | None = None, progress: Progress | None = None,
) -> ReplayReport:
    """The report of `policy` over `history`; `moderator_answers` as `coordinate` takes them (recorded)."""
    return Replay(list(history), roster, policy, moderator_answers or {}, progress).run()


class Replay:
    def __init__(self, history: list[BlipFacts], roster: Roster, policy: CoordinationPolicy,
                 moderator_answers: Mapping[str, Sequence[str] | None], progress: Progress | None) -> None:
        self.roster, self.policy, self.progress = roster, policy, progress
        self.moderator_answers = moderator_answers if policy.strategy == "moderator" else {}
        self.total = len(history)
        self.recorded_at = {facts.uri: facts.at for facts in history}
        self.recorded_parent = {facts.uri: facts.parent for facts in history}
        self.replies: dict[tuple[str, str], list[BlipFacts]] = defaultdict(list)  # (agent, parent) → its replies
        self.queue: list[tuple[float, int, BlipFacts | None]] = []  # (when, order, blip) — None: a floor's deadline
        self.order = 0
        self.kept: dict[str, BlipFacts] = {}
        self.next_tick = float("-inf")  # the earliest deadline a tick is scheduled for
        self.state = CoordinationState()
        self.reasons: Counter[Reason] = Counter()
        self.now = 0.0
        self.report = ReplayReport(policy.strategy, len(roster.agents),
                                   calls_per_agent={name: 0 for name in roster.names})
        for facts in history:
            if facts.author_agent is not None and facts.parent is not None:
                self.replies[facts.author_agent, facts.parent].append(facts)
                self.report.recorded_replies += 1
            elif facts.author_agent is None:
                self.schedule(facts.at, facts)

    def schedule(self, when: float, facts: BlipFacts | None) -> None:
        heapq.heappush(self.queue, (when, self.order, facts))
        self.order += 1

    def run(self) -> ReplayReport:
        while self.queue:
            when, _, facts = heapq.heappop(self.queue)
            self.now = when
            blips = [] if facts is None else [self.as_replayed(facts)]
            answers = {blip.uri: self.moderator_answers[blip.uri] for blip in blips if blip.uri in self.moderator_answers}
            round = coordinate(blips, self.roster, self.state, self.policy, when, answers)
            self.state = round.state
            for blip in blips:
                self.take_in(blip, round.decisions)
            for decision in round.decisions:
                self.count(decision)
            if round.state.floors_due:  # the next turn to end in silence, unless one is due before it anyway
                due = min(round.state.floors_due.values())
                if due < self.next_tick or self.next_tick <= when:
                    self.next_tick = due
                    self.schedule(due, None)
            if self.progress is not None and blips:
                self.progress(len(self.kept), self.total)
        self.report.reasons = {reason.value: count for reason, count in self.reasons.most_common()}
        self.report.threads = len(self.state.threads)
        self.report.threads_closed = sum(1 for thread in self.state.threads.values() if thread.closed is not None)
        return self.report

    def as_replayed(self, facts: BlipFacts) -> BlipFacts:
        """The blip as it stands in the replay: answering its nearest kept ancestor, its chain counted anew."""
        parent = facts.parent
        while parent is not None and parent not in self.kept:
            parent = self.recorded_parent.get(parent)
        parent_depth = self.kept[parent].chain_depth if parent is not None else None
        depth = chain_depth(facts.author_kind, parent_depth)
        if parent == facts.parent and depth == facts.chain_depth:
            return facts
        return replace(facts, parent=parent, chain_depth=depth)

    def take_in(self, facts: BlipFacts, decisions: Sequence[Decision]) -> None:
        self.kept[facts.uri] = facts
        report = self.report
        if not facts.by_agent:
            report.human_blips += 1
        elif facts.author_agent is not None:
            report.replies_kept += 1
        report.max_chain = max(report.max_chain, facts.chain_depth)
        addressed = addressed_agents(facts, self.roster)
        if addressed:
            for decision in decisions:
                if decision.uri == facts.uri and decision.agent in addressed:
                    report.addressed_pairs += 1
                    if decision.outcome is Outcome.HANDED:
                        report.addressed_handed += 1
                    elif decision.reason in HARD_BOUNDS:
                        report.addressed_bounded += 1

    def count(self, decision: Decision) -> None:
        if not decision.final:
            return
        self.reasons[decision.reason] += 1
        if decision.outcome is not Outcome.HANDED:
            return
        self.report.calls += 1
        self.report.calls_per_agent[decision.agent] += 1
        # The agent's recorded replies to this blip stand in, as long after the hand-over as they took then.
        for reply in self.replies.pop((decision.agent, decision.uri), ()):
            latency = max(0.0, reply.at - self.recorded_at[decision.uri])
            self.schedule(self.now + latency, reply)

