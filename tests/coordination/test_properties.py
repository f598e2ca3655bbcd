"""Properties over generated histories, every strategy and bounds drawn at random (hypothesis)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blipflow.coordination.addressing import addressed_agents
from blipflow.coordination.coordinate import Round, coordinate
from blipflow.coordination.decisions import HARD_BOUNDS, Outcome, Reason
from blipflow.coordination.facts import BlipFacts, record_facts
from blipflow.coordination.moderator import validate
from blipflow.coordination.participants import Participant, Roster
from blipflow.coordination.state import CoordinationState, state_from_dict
from blipflow.model.coordination_policy import STRATEGY_NAMES, CoordinationPolicy

SKILLS = ("postgres", "rust", "music", "chess", "law")
TOKEN = "<END>"


@dataclass
class History:
    roster: Roster
    blips: list[BlipFacts]
    batches: list[int]  # how many blips each call takes
    answers: dict[str, object]  # the moderator's recorded answers


@st.composite
def histories(draw) -> History:
    agents = draw(st.integers(1, 5))
    roster = Roster.of([Participant(f"a{n}", f"did:plc:a{n}", f"a{n}.test", frozenset({SKILLS[n]}))
                        for n in range(agents)], other_agent_dids=["did:plc:outsider"])
    authors = ["did:plc:person", "did:plc:someone", "did:plc:outsider"] + [f"did:plc:a{n}" for n in range(agents)]
    blips: list[BlipFacts] = []
    at = 0.0
    for index in range(draw(st.integers(1, 30))):
        at += draw(st.sampled_from([0.0, 1.0, 20.0, 90.0, 400.0]))
        did = draw(st.sampled_from(authors))
        parent = blips[draw(st.integers(0, index - 1))] if index and draw(st.booleans()) else None
        words, facets = [], []
        for n in draw(st.sets(st.integers(0, agents), max_size=2)):  # `agents`: a handle nobody has
            if draw(st.booleans()):
                words.append(f"@a{n}.test")
            else:
                facets.append({"features": [{"$type": "app.bsky.richtext.facet#mention", "did": f"did:plc:a{n}"}]})
        if draw(st.booleans()):
            words.append(f"#{draw(st.sampled_from(SKILLS))}")
        if draw(st.integers(0, 9)) == 0:
            words.append(TOKEN)
        record: dict = {"content": " ".join(words) or "hi"}
        if parent is not None:
            record["reply"] = {"root": {"uri": parent.root, "cid": "c"}, "parent": {"uri": parent.uri, "cid": "c"}}
        if facets:
            record["facets"] = facets
        blips.append(record_facts(f"at://{did}/stream.thought.blip/{index:04d}", did, record, at=at, roster=roster,
                                parent_depth=parent.chain_depth if parent else None))
    batches, left = [], len(blips)
    while left:
        batches.append(draw(st.integers(1, left)))
        left -= batches[-1]
    names = list(roster.names) + ["ghost"]
    answer = st.none() | st.just("a0") | st.lists(st.sampled_from(names), max_size=3)
    answers = {b.uri: draw(answer) for b in blips if draw(st.booleans())}
    return History(roster, blips, batches, answers)


policies = st.builds(
    CoordinationPolicy,
    strategy=st.sampled_from(STRATEGY_NAMES), k=st.integers(1, 3), agent_blip_k=st.integers(0, 2),
    queue_length=st.integers(0, 2), turn_timeout=st.sampled_from([10.0, 60.0, 300.0]), seed=st.integers(0, 3),
    moderator=st.just("a0"), order=st.lists(st.sampled_from(["a0", "a1", "a2"]), unique=True, max_size=3),
    attention_per_minute=st.none() | st.integers(1, 4), max_chain_depth=st.integers(1, 4),
    max_agent_turns=st.none() | st.integers(1, 6), max_turns_per_agent=st.none() | st.integers(1, 3),
    allow_repeat_speaker=st.booleans(), termination_token=st.none() | st.just(TOKEN),
    cooldown_seconds=st.sampled_from([0.0, 30.0]),
)


@dataclass
class Run:
    rounds: list[Round]
    batches: list[list[BlipFacts]]
    state: CoordinationState


def run(history: History, policy: CoordinationPolicy) -> Run:
    state, rounds, batches, start = CoordinationState(), [], [], 0
    answers = history.answers if policy.strategy == "moderator" else None
    for size in history.batches:
        batch = history.blips[start:start + size]
        start += size
        round = coordinate(batch, history.roster, state, policy, batch[-1].at, answers)
        rounds.append(round)
        batches.append(batch)
        state = round.state
    for _ in range(len(history.roster.agents) * len(history.blips) + 2):  # each pass grants someone: bounded
        if not state.floors_due:
            break
        round = coordinate([], history.roster, state, policy, max(state.floors_due.values()))
        rounds.append(round)
        batches.append([])
        state = round.state
    assert not state.floors_due, "the floors never settled"
    return Run(rounds, batches, state)


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(histories(), policies)
def test_each_agent_and_blip_is_decided_once_never_its_own_and_the_addressed_always_handed(history, policy):
    result = run(history, policy)
    decisions = [d for round in result.rounds for d in round.decisions]
    finals = Counter((d.agent, d.uri) for d in decisions if d.final)
    assert finals == Counter({(agent, b.uri): 1 for agent in history.roster.names for b in history.blips})
    final = {(d.agent, d.uri): d for d in decisions if d.final}
    for b in history.blips:
        if b.author_agent is not None:
            assert final[b.author_agent, b.uri].reason is Reason.OWN_BLIP
        for agent, address in addressed_agents(b, history.roster).items():
            decision = final[agent, b.uri]
            assert decision.outcome is Outcome.HANDED and decision.reason.value == address.value \
                or decision.reason in HARD_BOUNDS, decision
    assert all(d.agent in history.roster.names for d in decisions)


@SETTINGS
@given(histories(), policies)
def test_no_agent_is_handed_past_a_bound_and_no_banned_repeat_is_chosen(history, policy):
    result = run(history, policy)
    observed: list[BlipFacts] = []
    for round, batch in zip(result.rounds, result.batches):
        position = -1
        index = {b.uri: n for n, b in enumerate(batch)}
        for decision in round.decisions:
            position = max(position, index.get(decision.uri, -1))
            if decision.outcome is not Outcome.HANDED:
                continue
            seen = observed + batch[:position + 1]
            facts = next(b for b in history.blips if b.uri == decision.uri)
            thread = [b for b in seen if b.root == facts.root]
            agent_blips = [b for b in thread if b.by_agent]
            assert facts.chain_depth < policy.max_chain_depth
            assert facts.author_agent != decision.agent
            if policy.termination_token:
                assert not any(policy.termination_token in b.content for b in thread), decision
            if policy.max_agent_turns is not None:
                assert len(agent_blips) < policy.max_agent_turns, decision
            if policy.max_turns_per_agent is not None:
                assert sum(b.author_agent == decision.agent for b in thread) < policy.max_turns_per_agent
            if decision.reason is Reason.SELECTED and not policy.allow_repeat_speaker:
                speakers = [b.author_agent for b in agent_blips]
                assert not speakers or speakers[-1] != decision.agent, "a banned repeat speaker was chosen"
        observed += batch


@SETTINGS
@given(histories(), policies)
def test_every_selection_names_eligible_speakers_or_says_why_nobody(history, policy):
    result = run(history, policy)
    for round in result.rounds:
        handed = {(d.agent, d.uri) for d in round.decisions if d.outcome is Outcome.HANDED}
        for selection in round.selections:
            assert set(selection.speakers) <= set(history.roster.names)
            assert all((agent, selection.uri) in handed for agent in selection.speakers)
            assert selection.speakers or selection.note, selection
            if policy.strategy == "moderator" and selection.uri in history.answers and selection.speakers:
                answer = history.answers[selection.uri]
                valid = validate(answer, selection.speakers, history.roster).speakers  # type: ignore[arg-type]
                assert valid == selection.speakers or selection.note.startswith("fell back to relevance")


@settings(max_examples=40, deadline=None)
@given(histories(), policies)
def test_the_same_inputs_give_the_same_decisions_and_the_state_is_a_storable_value(history, policy):
    first, second = run(history, policy), run(history, policy)
    assert [r.decisions for r in first.rounds] == [r.decisions for r in second.rounds]
    stored = json.loads(json.dumps(first.state.as_dict()))
    assert state_from_dict(stored) == first.state


def test_the_moderator_fallback_on_its_own():
    """A late, empty or invalid answer never leaves a person's blip without speakers while anyone is eligible."""
    roster = Roster.of([Participant("a0", "did:plc:a0"), Participant("a1", "did:plc:a1")])
    policy = CoordinationPolicy(strategy="moderator", moderator="a0")
    for answer in (None, [], ["ghost"], "a0", ["a1", "ghost"]):
        b = record_facts(f"at://did:plc:p/stream.thought.blip/{id(answer)}", "did:plc:p", {"content": "hi"}, at=0,
                       roster=roster)
        round = coordinate([b], roster, CoordinationState(), policy, 0, {b.uri: answer})
        [selection] = round.selections
        assert selection.speakers, (answer, selection)
        assert (selection.speakers == ("a1",)) if answer == ["a1", "ghost"] else selection.note.startswith("fell back")
