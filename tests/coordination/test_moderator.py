"""The moderator's answer: taken when valid, cleaned when partly so, replaced by relevance when not."""

import pytest

from blipflow.coordination.coordinate import coordinate
from blipflow.coordination.moderator import validate
from blipflow.coordination.state import CoordinationState
from blipflow.model.coordination_policy import CoordinationPolicy
from tests.coordination.chat import PERSON, ROSTER, Chat, blip

MODERATED = CoordinationPolicy(strategy="moderator", moderator="ada", queue_length=0)


def test_a_valid_answer_is_followed():
    chat = Chat(MODERATED)
    question = blip(PERSON, "#rust question", at=1)
    round = chat.feed(question, moderator_answers={question.uri: ["cy"]})
    assert chat.handed(question.uri) == ["cy"]
    assert round.selections[0].speakers == ("cy",) and round.selections[0].note == ""


def test_unknown_and_ineligible_names_are_dropped_never_handed():
    chat = Chat(MODERATED)
    mine = blip("did:plc:bo", "my own post", at=1)
    chat.feed(mine, moderator_answers={mine.uri: ["nobody", "bo", "cy", "cy"]})
    assert chat.handed(mine.uri) == ["cy"]
    assert "unknown agents dropped: 'nobody'" in chat.rounds[-1].selections[0].note
    assert "not eligible now: bo" in chat.rounds[-1].selections[0].note


@pytest.mark.parametrize("answer, why", [
    (None, "did not answer in time"), ([], "named nobody"), (["ghost"], "named nobody eligible"),
    ("cy", "not a list of names"), ([3], "not a list of names"),
])
def test_a_late_empty_or_invalid_answer_falls_back_to_relevance_with_the_reason(answer, why):
    chat = Chat(MODERATED)
    question = blip(PERSON, "#rust question", at=1)
    round = chat.feed(question, moderator_answers={question.uri: answer})
    assert chat.handed(question.uri) == ["bo"]  # relevance: bo knows rust
    assert round.selections[0].note.startswith("fell back to relevance") and why in round.selections[0].note
    assert why in chat.decision("ada", question.uri).detail


def test_no_answer_at_all_is_a_late_one():
    chat = Chat(MODERATED)
    question = blip(PERSON, "#music question", at=1)
    chat.feed(question)
    assert chat.handed(question.uri) == ["cy"]
    assert "did not answer in time" in chat.rounds[-1].selections[0].note


def test_answers_for_another_strategy_are_refused_not_ignored():
    question = blip(PERSON, "hi", at=1)
    with pytest.raises(ValueError, match="would be ignored"):
        coordinate([question], ROSTER, CoordinationState(), CoordinationPolicy(strategy="relevance"), 1,
                   {question.uri: ["ada"]})


def test_validation_keeps_the_moderators_order_once_each():
    verdict = validate(["cy", "ada", "cy"], ["ada", "bo", "cy"], ROSTER)
    assert verdict.speakers == ("cy", "ada") and verdict.note == ""
