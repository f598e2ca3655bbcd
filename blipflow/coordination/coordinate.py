"""The entry point: who is handed each new blip, decided for every agent at once, with the reasons.

    round = coordinate(new_blips, roster, state, policy, now)
    round.decisions   # one per (agent, blip): handed | skipped | waiting (queued for the thread's floor)
    round.state       # the next state: pass it to the next call (or store it)

Each blip is given once (a blip given again would be decided again). Only handed and skipped decisions
are final and belong in the ledger; a waiting one becomes final in a later round, when the floor reaches
its agent, moves on, or the thread closes — a call with no new blips at a later `now` lets silent turns end.

Order of rules for one agent and one blip: its own blip; hard bounds (an author it does not listen to,
chain too deep, thread closed, its turns in the thread used up); addressing (mentioned or answered:
handed); next in line on the thread's floor (waits); soft bounds (repeat speaker, cool-down); attention budget; then the thread's strategy
chooses among those left. Turns that ended in silence pass the floor before anything else.

Once an hour (of `now`), threads quiet for the policy's `forget_threads_after` are forgotten, so the state
stays as large as the live conversation, not the whole history; a forgotten thread starts its turns anew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blipflow.coordination import floor as floors
from blipflow.coordination.addressing import Address, addressed_agents
from blipflow.coordination.attention import Rank, over_budget, rank, recent
from blipflow.coordination.decisions import Decision, Outcome, Reason, Selection
from blipflow.coordination.facts import BlipFacts
from blipflow.coordination.participants import Roster
from blipflow.coordination.state import (
    AgentState,
    CoordinationState,
    Floor,
    ThreadState,
)
from blipflow.coordination.strategies import Choice, Pick, choose
from blipflow.coordination.termination import (
    after_blip,
    agent_bound,
    soft_bound,
    thread_bound,
)
from blipflow.model.coordination_policy import CoordinationPolicy

SWEEP_EVERY = 3600.0  # seconds of `now` between looks for threads to forget
HANDED_FOR = {Address.MENTIONED: Reason.MENTIONED, Address.ANSWERED: Reason.ANSWERED}


@dataclass(frozen=True)
class Round:
    decisions: tuple[Decision, ...]
    selections: tuple[Selection, ...]
    state: CoordinationState


def coordinate(
    new_blips: Sequence[BlipFacts], roster: Roster, state: CoordinationState, policy: CoordinationPolicy,
    now: float, moderator_answers: Mapping[str, Sequence[str] | None] | None = None,
) -> Round:
    """Decide who is handed each of `new_blips` (taken in time order) at `now`, seconds since the epoch.

    `moderator_answers`: blip uri → the names the moderator chose (None: it did not answer in time); only
    with the `moderator` strategy — given to any other, they raise ValueError rather than be ignored."""
    if moderator_answers and policy.strategy != "moderator":
        raise ValueError(f"moderator answers given, but the strategy is {policy.strategy!r}: they would be ignored")
    coordination = Coordination(roster, state, policy, now, moderator_answers or {})
    coordination.pass_silent_floors()
    coordination.forget_quiet_threads()
    blips = sorted(new_blips, key=lambda facts: facts.at)
    coordination.reserve_attention(blips)
    for facts in blips:
        coordination.take(facts)
    return coordination.round()


class Coordination:
    """One call's working copy of the state; `round()` hands it back as a new plain value."""

    def __init__(self, roster: Roster, state: CoordinationState, policy: CoordinationPolicy, now: float,
                 moderator_answers: Mapping[str, Sequence[str] | None]) -> None:
        self.roster, self.policy, self.now, self.moderator_answers = roster, policy, now, moderator_answers
        self.threads = dict(state.threads)
        self.agents = dict(state.agents)
        self.floors_due = dict(state.floors_due)
        self.swept_at = state.swept_at
        self.rotation = state.rotation % max(1, len(roster.agents))
        self.decisions: list[Decision] = []
        self.selections: list[Selection] = []
        self.ahead: dict[str, list[int]] = {}  # agent → blips of each rank still to come in this round
        self.ranks: dict[tuple[str, str], Rank] = {}

    def round(self) -> Round:
        state = CoordinationState(self.threads, self.agents, self.rotation, self.floors_due, self.swept_at)
        return Round(tuple(self.decisions), tuple(self.selections), state)

    # -- the ledger's entries ------------------------------------------------------------------------

    def hand(self, agent: str, uri: str, reason: Reason, detail: str = "") -> None:
        self.decisions.append(Decision(agent, uri, Outcome.HANDED, reason, self.policy.strategy, detail))
        if self.policy.attention_per_minute is not None:  # only a budget needs to know when
            history = self.agents.get(agent) or AgentState()
            self.agents[agent] = AgentState(recent(history, self.now) + (self.now,), history.selected_at)

    def skip(self, agent: str, uri: str, reason: Reason, detail: str = "") -> None:
        self.decisions.append(Decision(agent, uri, Outcome.SKIPPED, reason, self.policy.strategy, detail))

    def wait(self, agent: str, uri: str, detail: str) -> None:
        self.decisions.append(Decision(agent, uri, Outcome.WAITING, Reason.QUEUED, self.policy.strategy, detail))

    # -- threads and their floors --------------------------------------------------------------------

    def thread(self, root: str) -> ThreadState:
        return self.threads.get(root) or ThreadState(root)

    def keep(self, thread: ThreadState) -> None:
        self.threads[thread.root] = thread
        deadline = thread.floor.deadline if thread.floor is not None else None
        if deadline is None:
            self.floors_due.pop(thread.root, None)
        else:
            self.floors_due[thread.root] = deadline

    def forget_quiet_threads(self) -> None:
        if self.now - self.swept_at < SWEEP_EVERY:
            return
        quiet_since = self.now - self.policy.forget_threads_after
        self.threads = {root: thread for root, thread in self.threads.items() if not thread.quiet_since(quiet_since)}
        self.swept_at = self.now

    def pass_silent_floors(self) -> None:
        if not self.floors_due or min(self.floors_due.values()) > self.now:
            return
        for root, due in list(self.floors_due.items()):
            if due <= self.now:
                thread = self.thread(root)
                floor, passes = floors.turns_ended(thread.floor, floors.silent_speakers(thread.floor, self.now),
                                                   silent=True)
                self.keep(self.passed(thread, floor, passes))

    def passed(self, thread: ThreadState, floor: Floor, passes: int) -> ThreadState:
        """The thread once `passes` of those next in line took the floor (each handed what waited for it);
        a floor nobody holds or will hold is closed, and what still waited is skipped."""
        while passes > 0 and floor.queue:
            name, uris, floor = floors.next_in_line(floor)
            bound = thread_bound(self.policy, thread, name)
            for uri in uris:
                if bound is None:
                    self.hand(name, uri, Reason.FLOOR_PASSED, f"its turn on the floor opened by {floor.about}")
                else:
                    self.skip(name, uri, *bound)
            if bound is None:
                floor = floors.granted(floor, name, self.now, self.policy.turn_timeout)
                passes -= 1
        if floors.done(floor):
            self.close_floor(floor, Reason.NOT_YOUR_TURN, "the speakers answered before its turn came")
            return thread.with_floor(None)
        return thread.with_floor(floor)

    def close_floor(self, floor: Floor, reason: Reason, detail: str) -> None:
        for name, uris in floor.waiting.items():
            for uri in uris:
                self.skip(name, uri, reason, detail)

    # -- attention -----------------------------------------------------------------------------------

    def reserve_attention(self, blips: list[BlipFacts]) -> None:
        """With a budget, note the rank of each (agent, blip) of this round, so that a lower-ranked blip
        does not take what a higher-ranked one later in the round needs."""
        if self.policy.attention_per_minute is None or len(blips) < 2:
            return
        for agent in self.roster.agents:
            counts = [0] * len(Rank)
            for facts in blips:
                thread = self.thread(facts.root)
                of_rank = rank(agent.name, facts, addressed_agents(facts, self.roster).get(agent.name), thread)
                self.ranks[agent.name, facts.uri] = of_rank
                counts[of_rank] += 1
            self.ahead[agent.name] = counts

    def over_attention(self, agent: str, facts: BlipFacts, thread: ThreadState) -> bool:
        """Whether a blip not addressed to the agent would take it over its budget."""
        if self.policy.attention_per_minute is None:
            return False
        of_rank = self.ranks.get((agent, facts.uri))
        reserved = 0
        if of_rank is None:
            of_rank = rank(agent, facts, None, thread)
        else:
            counts = self.ahead[agent]
            counts[of_rank] -= 1
            reserved = sum(counts[:of_rank])
        handed = len(recent(self.agents.get(agent) or AgentState(), self.now))
        return over_budget(self.policy.attention_per_minute, handed, reserved, of_rank)

    # -- one blip ------------------------------------------------------------------------------------

    def take(self, facts: BlipFacts) -> None:
        policy = self.policy
        thread = after_blip(policy, self.thread(facts.root), facts)
        if thread.floor is not None and thread.closed is not None:
            self.close_floor(thread.floor, Reason.THREAD_CLOSED, thread.closed)
            thread = thread.with_floor(None)
        speaker = facts.author_agent
        opens_floor = speaker is None  # a person's blip, or an outside agent's: someone may answer it
        addressed = addressed_agents(facts, self.roster)
        next_in_line = set(thread.floor.queue) if thread.floor is not None and not opens_floor else set()
        candidates: list[str] = []
        queued: list[str] = []
        handed: set[str] = set()
        own_depth, any_wanted = self.roster.own_bounds
        deepest = min(policy.max_chain_depth, own_depth or policy.max_chain_depth)
        own_bounds_matter = any_wanted or facts.chain_depth >= deepest
        for participant in self.roster.agents:
            agent = participant.name
            if agent == speaker:
                self.skip(agent, facts.uri, Reason.OWN_BLIP)
                continue
            bound = agent_bound(policy, facts, participant) if own_bounds_matter else None
            bound = bound or thread_bound(policy, thread, agent)
            if bound is not None:
                self.skip(agent, facts.uri, *bound)
                continue
            address = addressed.get(agent)
            if address is not None:
                self.hand(agent, facts.uri, HANDED_FOR[address])
                handed.add(agent)
                continue
            if agent in next_in_line:
                queued.append(agent)
                continue
            bound = soft_bound(policy, thread, agent, self.now)
            if bound is not None:
                self.skip(agent, facts.uri, *bound)
            elif self.over_attention(agent, facts, thread):
                self.skip(agent, facts.uri, Reason.OVER_ATTENTION_BUDGET,
                          f"{agent} was handed {policy.attention_per_minute} blips in the last minute")
            else:
                candidates.append(agent)
        choice = self.choice(facts, thread, tuple(candidates), opens_floor, len(handed))
        for agent in choice.speakers:
            self.hand(agent, facts.uri, Reason.SELECTED, f"selected by {policy.strategy}")
            self.agents[agent] = AgentState((self.agents.get(agent) or AgentState()).handed_at, self.now)
            handed.add(agent)
        for agent in choice.queue:
            self.wait(agent, facts.uri, f"next in line on the floor opened by {facts.uri}")
        for agent in queued:
            self.wait(agent, facts.uri, f"next in line on the floor opened by {thread.floor.about}")
        chosen = set(choice.speakers) | set(choice.queue)
        for agent in candidates:
            if agent not in chosen:
                self.skip(agent, facts.uri, Reason.NOT_SELECTED,
                          f"not selected by {policy.strategy}" + (f" ({choice.note})" if choice.note else ""))
        if opens_floor:
            thread = self.reopened(thread, facts, choice, handed)
        else:
            if queued:
                thread = thread.with_floor(floors.carried(thread.floor, facts.uri, queued))
            if thread.floor is not None and speaker in thread.floor.speakers:
                # Its turn ended with this blip: the next in line is handed it with all that waited for them.
                floor, passes = floors.turns_ended(thread.floor, [speaker], silent=False)
                thread = self.passed(thread, floor, passes)
        self.keep(thread)
        self.selections.append(Selection(facts.uri, policy.strategy, choice.speakers, choice.queue, choice.note))

    def choice(self, facts: BlipFacts, thread: ThreadState, candidates: tuple[str, ...], opens_floor: bool,
               addressed: int) -> Choice:
        """The strategy's choice: for a person's blip, the places addressing left of `k`; for an agent's,
        `agent_blip_k` beside those it addresses. The moderator's answer, when given, is always heard."""
        policy = self.policy
        if policy.strategy == "broadcast":  # everyone: k does not apply
            slots = len(candidates)
        else:
            slots = max(0, policy.k - addressed) if opens_floor else policy.agent_blip_k
        answered_by_moderator = facts.uri in self.moderator_answers
        if slots == 0 and not answered_by_moderator:
            return Choice((), note="the agents it addresses fill every place" if opens_floor
                          else "an agent's blip goes only to the agents it addresses")
        if not candidates:
            return Choice((), note="nobody: no agent is eligible")
        choice = choose(Pick(
            facts=facts, candidates=candidates, slots=slots, opens_floor=opens_floor,
            anyone_addressed=addressed > 0, policy=policy, roster=self.roster, thread=thread,
            agents=self.agents, rotation=self.rotation, queue_length=policy.queue_length if opens_floor else 0,
            moderator_answer=self.moderator_answers.get(facts.uri),
        ))
        if choice.rotation is not None:
            self.rotation = choice.rotation
        return choice

    def reopened(self, thread: ThreadState, facts: BlipFacts, choice: Choice, handed: set[str]) -> ThreadState:
        """A new floor for this blip; what waited on the old one goes to those handed this blip, waits on
        in the new queue, or is skipped (the floor moved on)."""
        new = floors.opened(facts.uri, choice.speakers, choice.queue, every_turn=self.policy.strategy == "sequential",
                            now=self.now, turn_timeout=self.policy.turn_timeout)
        old = thread.floor
        if old is not None:
            for agent, uris in old.waiting.items():
                if agent in handed:
                    for uri in uris:
                        self.hand(agent, uri, Reason.FLOOR_PASSED, f"carried with {facts.uri}")
                elif new is not None and agent in new.queue:
                    new = new.with_line(new.queue, {**new.waiting, agent: uris + new.waiting[agent]})
                else:
                    for uri in uris:
                        self.skip(agent, uri, Reason.NOT_YOUR_TURN, f"the floor moved on to {facts.uri}")
        return thread.with_floor(new)
