"""Attention: a budget of blips per minute per agent; the addressed always get through (and count), the
open stream is dropped first, and higher-ranked blips of a round are served before lower ones."""

from blipflow.coordination.addressing import addressed_agents
from blipflow.coordination.attention import Rank, rank
from blipflow.coordination.decisions import Outcome, Reason
from blipflow.coordination.state import ThreadState
from blipflow.model.coordination_policy import CoordinationPolicy
from tests.coordination.chat import PERSON, ROSTER, Chat, blip

BUDGETED = CoordinationPolicy(strategy="broadcast", attention_per_minute=2)


def test_over_the_budget_the_open_stream_is_dropped_with_the_reason_until_the_minute_passes():
    chat = Chat(BUDGETED)
    blips = [blip(PERSON, f"chatter {n}", at=n) for n in range(3)]
    for b in blips:
        chat.feed(b)
    assert [chat.decision("ada", b.uri).outcome for b in blips] == [Outcome.HANDED, Outcome.HANDED, Outcome.SKIPPED]
    assert chat.decision("ada", blips[2].uri).reason is Reason.OVER_ATTENTION_BUDGET
    later = blip(PERSON, "a minute later", at=61)
    chat.feed(later)
    assert chat.decision("ada", later.uri).outcome is Outcome.HANDED


def test_addressed_blips_are_never_dropped_for_the_budget():
    chat = Chat(BUDGETED)
    for n in range(2):
        chat.feed(blip(PERSON, f"chatter {n}", at=n))
    mention = blip(PERSON, "@ada.test over here", at=3)
    chat.feed(mention)
    assert chat.decision("ada", mention.uri).reason is Reason.MENTIONED


def test_in_one_round_higher_ranked_blips_go_first():
    chat = Chat(BUDGETED)
    question = blip(PERSON, "q", at=0)
    chat.feed(question)  # everyone has used 1 of 2
    chat.feed(blip("did:plc:bo", "b", at=5, parent=question))  # bo takes part in the thread
    chatter = blip(PERSON, "unrelated chatter", at=10)  # first in the round, but the open stream
    in_thread = blip(PERSON, "and then?", at=12, parent=question)
    chat.feed([chatter, in_thread], now=12)
    assert chat.decision("bo", chatter.uri).reason is Reason.OVER_ATTENTION_BUDGET
    assert chat.decision("bo", in_thread.uri).reason is Reason.SELECTED
    assert chat.decision("ada", chatter.uri).reason is Reason.OVER_ATTENTION_BUDGET  # handed q and bo's reply


def test_ranks():
    root = blip("did:plc:ada", "mine", at=0)
    thread = ThreadState(root.uri, turns={"bo": 1})
    answer = blip(PERSON, "re", at=1, parent=root)
    assert rank("ada", answer, addressed_agents(answer, ROSTER).get("ada"), thread) is Rank.ANSWERED
    mention = blip(PERSON, "@cy.test", at=1, parent=root)
    assert rank("cy", mention, addressed_agents(mention, ROSTER).get("cy"), thread) is Rank.ADDRESSED
    assert rank("bo", answer, None, thread) is Rank.TOOK_PART
    assert rank("cy", answer, None, thread) is Rank.OPEN_STREAM
