"""Replay: recorded replies stand in only where the policy hands their agent what they answer."""

import json

import pytest

from blipflow.coordination.replay import replay
from blipflow.coordination.replay_report import gini
from blipflow.coordination.synthetic_history import generated_history
from blipflow.model.coordination_policy import CoordinationPolicy
from tests.coordination.chat import PERSON, ROSTER, blip


def recorded():
    question = blip(PERSON, "any #rust tips?", at=0)
    bo = blip("did:plc:bo", "use clippy", at=10, parent=question)
    ada = blip("did:plc:ada", "@cy.test knows", at=12, parent=question)
    cy = blip("did:plc:cy", "I do not", at=20, parent=ada)  # below a reply the policy may not cause
    person = blip(PERSON, "thanks ada", at=30, parent=ada)
    return [question, bo, ada, cy, person]


def test_replies_the_policy_would_not_cause_are_dropped_with_their_descendants():
    report = replay(recorded(), ROSTER, CoordinationPolicy(strategy="relevance", k=1, queue_length=0))
    assert (report.human_blips, report.recorded_replies, report.replies_kept) == (2, 3, 1)
    # bo is handed the question (rust); the person's thanks now answers the question and goes to bo (took part).
    assert report.calls_per_agent == {"ada": 0, "bo": 2, "cy": 0}
    assert report.calls == 2 and report.calls_per_human_blip == 1.0
    assert report.max_chain == 1


def test_under_broadcast_every_recorded_reply_stands_in():
    report = replay(recorded(), ROSTER, CoordinationPolicy(strategy="broadcast"))
    assert report.replies_kept == 3
    assert report.max_chain == 2
    # the question to 3, bo's and ada's replies to 2 each, cy's to 2, the thanks to 3
    assert report.calls == 3 + 2 + 2 + 2 + 3
    assert report.addressed_pairs == 3  # cy mentioned by ada; ada answered by cy and by the person
    assert report.addressed_recall == 1.0


def test_a_recorded_reply_arrives_as_long_after_its_hand_over_as_it_took():
    question = blip(PERSON, "line by line", at=0)
    first = blip("did:plc:ada", "one", at=5, parent=question)
    second = blip("did:plc:bo", "two", at=7, parent=question)  # recorded 7 s after the question
    report = replay([question, first, second], ROSTER,
                    CoordinationPolicy(strategy="sequential", order=["ada", "bo", "cy"], turn_timeout=60))
    # bo is handed the question once ada has answered (at 5), with ada's reply; its own reply stands in at 12.
    assert report.replies_kept == 2
    # ada spoke first and is not handed bo's reply (it does not address her); cy, last, is handed all three.
    assert report.calls_per_agent == {"ada": 1, "bo": 2, "cy": 3}


def test_the_report_is_json_and_the_replay_deterministic():
    history = generated_history(agents=6, human_blips=150, seed=3)
    policy = CoordinationPolicy(strategy="random", seed=5, max_agent_turns=4)
    first, second = replay(history.blips, history.roster, policy), replay(history.blips, history.roster, policy)
    assert first == second
    data = json.loads(json.dumps(first.as_dict()))
    assert data["human_blips"] == 150 and data["calls"] == sum(data["calls_per_agent"].values())
    assert data["threads_closed"] > 0 and sum(data["reasons"].values()) > data["calls"]


def test_progress_is_reported():
    seen = []
    history = generated_history(agents=3, human_blips=20, seed=1)
    replay(history.blips, history.roster, CoordinationPolicy(), progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][1] == len(history.blips) and all(done <= total for done, total in seen)


@pytest.mark.parametrize("values, expected", [([], 0.0), ([0, 0], 0.0), ([5, 5, 5], 0.0), ([0, 0, 0, 9], 0.75)])
def test_gini(values, expected):
    assert gini(values) == pytest.approx(expected)
