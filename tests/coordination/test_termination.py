"""Termination: bounds per thread and per agent, the token, the cool-down, and no repeat speaker
without livelock. Hard bounds hold against addressing."""

from blipflow.coordination.decisions import Outcome, Reason
from blipflow.coordination.participants import Participant, Roster
from blipflow.model.coordination_policy import CoordinationPolicy
from tests.coordination.chat import PERSON, ROSTER, Chat, blip


def test_the_termination_token_closes_the_thread_even_to_the_addressed():
    chat = Chat(CoordinationPolicy(strategy="broadcast", termination_token="<END>"))
    question = blip(PERSON, "let's chat", at=1)
    chat.feed(question)
    done = blip("did:plc:ada", "that settles it <END>", at=2, parent=question)
    chat.feed(done)
    after = blip(PERSON, "@bo.test wait, one more", at=3, parent=done)
    chat.feed(after)
    assert chat.handed(done.uri) == [] and chat.handed(after.uri) == []
    assert chat.decision("bo", after.uri).reason is Reason.THREAD_CLOSED
    assert "termination token" in chat.decision("bo", after.uri).detail
    elsewhere = blip(PERSON, "new topic", at=4)
    chat.feed(elsewhere)
    assert chat.handed(elsewhere.uri) == ["ada", "bo", "cy"]  # other threads stay open


def test_max_agent_turns_closes_the_thread_and_max_turns_per_agent_stops_one_agent():
    chat = Chat(CoordinationPolicy(strategy="broadcast", max_agent_turns=3, max_turns_per_agent=1, max_chain_depth=9))
    question = blip(PERSON, "go", at=1)
    chat.feed(question)
    ada = blip("did:plc:ada", "one", at=2, parent=question)
    chat.feed(ada)
    assert chat.decision("ada", ada.uri).reason is Reason.OWN_BLIP
    prod = blip(PERSON, "@ada.test more?", at=3, parent=ada)
    chat.feed(prod)
    assert chat.decision("ada", prod.uri).reason is Reason.AGENT_TURNS_USED  # addressed, yet out of turns
    chat.feed(blip("did:plc:bo", "two", at=4, parent=question))
    third = blip("did:plc:outsider", "three", at=5, parent=question)  # outside agents count too
    chat.feed(third)
    assert chat.state.thread(question.uri).closed == "3 agent turns (max 3)"
    assert all(d.reason is Reason.THREAD_CLOSED for d in chat.decisions if d.uri == third.uri)


def test_no_repeat_speaker_picks_someone_else_and_says_nobody_rather_than_repeating():
    chat = Chat(CoordinationPolicy(strategy="round_robin", k=1, queue_length=0, allow_repeat_speaker=False))
    question = blip(PERSON, "q", at=1)
    chat.feed(question)
    assert chat.handed(question.uri) == ["ada"]
    chat.feed(blip("did:plc:ada", "a", at=2, parent=question))
    again = blip(PERSON, "again?", at=3, parent=question)
    chat.feed(again)
    assert chat.handed(again.uri) == ["bo"]
    assert chat.decision("ada", again.uri).reason is Reason.REPEAT_SPEAKER



def test_when_only_the_last_speaker_is_left_nobody_speaks_and_the_selection_says_why():
    two = Roster.of([ROSTER.by_name["ada"], ROSTER.by_name["bo"]])
    chat = Chat(CoordinationPolicy(strategy="relevance", allow_repeat_speaker=False, max_turns_per_agent=2), roster=two)
    question = blip(PERSON, "#postgres?", at=1)
    chat.feed(question)
    chat.feed(blip("did:plc:bo", "not my field", at=2, parent=question))
    chat.feed(blip("did:plc:bo", "really not", at=2.5, parent=question))
    chat.feed(blip("did:plc:ada", "here is how", at=3, parent=question))
    again = blip(PERSON, "more on #postgres?", at=4, parent=question)
    round = chat.feed(again)
    assert chat.handed(again.uri) == []
    assert chat.decision("ada", again.uri).reason is Reason.REPEAT_SPEAKER
    assert chat.decision("bo", again.uri).reason is Reason.AGENT_TURNS_USED
    assert round.selections[0].speakers == () and round.selections[0].note == "nobody: no agent is eligible"


def test_a_cool_down_keeps_a_speaker_out_unless_addressed():
    chat = Chat(CoordinationPolicy(strategy="broadcast", cooldown_seconds=60))
    question = blip(PERSON, "q", at=0)
    chat.feed(question)
    reply = blip("did:plc:ada", "a", at=10, parent=question)
    chat.feed(reply)
    soon = blip(PERSON, "hm", at=20, parent=question)
    chat.feed(soon)
    assert chat.decision("ada", soon.uri).reason is Reason.COOLING_DOWN
    addressed = blip(PERSON, "thanks", at=30, parent=reply)
    chat.feed(addressed)
    assert chat.decision("ada", addressed.uri).reason is Reason.ANSWERED
    later = blip(PERSON, "later", at=71, parent=question)
    chat.feed(later)
    assert chat.decision("ada", later.uri).outcome is Outcome.HANDED


def test_an_agent_only_chain_stops_at_its_bound_whoever_is_addressed():
    chat = Chat(CoordinationPolicy(strategy="broadcast", max_chain_depth=2))
    question = blip(PERSON, "q", at=0)
    one = blip("did:plc:ada", "@bo.test ?", at=1, parent=question)
    two = blip("did:plc:bo", "@ada.test !", at=2, parent=one)
    chat.feed([question, one, two], now=2)
    assert chat.handed(one.uri) == ["bo", "cy"]
    assert chat.handed(two.uri) == []
    assert chat.decision("ada", two.uri).reason is Reason.CHAIN_TOO_DEEP


def test_an_agent_sets_its_own_bounds_beside_the_policy():
    """`wanted_dids` and a lower `max_chain_depth` of its own hold for that agent alone, even against addressing."""
    roster = Roster.of([Participant("ada", "did:plc:ada", "ada.test", wanted_dids=frozenset({PERSON})),
                        Participant("bo", "did:plc:bo", "bo.test", max_chain_depth=1),
                        Participant("cy", "did:plc:cy", "cy.test")])
    chat = Chat(CoordinationPolicy(strategy="broadcast", max_chain_depth=3), roster=roster)
    question = blip(PERSON, "q", at=0, roster=roster)
    stranger = blip("did:plc:stranger", "@ada.test hello", at=1, roster=roster)
    answer = blip("did:plc:cy", "@bo.test what say you?", at=2, parent=question, roster=roster)
    chat.feed([question, stranger, answer], now=2)
    assert chat.handed(question.uri) == ["ada", "bo", "cy"]
    assert chat.decision("ada", stranger.uri).reason is Reason.AUTHOR_NOT_WANTED
    assert chat.handed(stranger.uri) == ["bo", "cy"]
    assert chat.decision("bo", answer.uri).reason is Reason.CHAIN_TOO_DEEP  # its own bound: 1
    assert chat.handed(answer.uri) == []  # ada listens only to the person


def test_a_quiet_thread_is_forgotten_and_its_turns_start_anew():
    day = 86400.0
    chat = Chat(CoordinationPolicy(strategy="broadcast", max_turns_per_agent=1, forget_threads_after=day))
    question = blip(PERSON, "q", at=0)
    reply = blip("did:plc:ada", "a", at=1, parent=question)
    chat.feed([question, reply], now=1)
    again = blip(PERSON, "and now?", at=2, parent=reply)
    chat.feed(again)
    assert chat.decision("ada", again.uri).reason is Reason.AGENT_TURNS_USED
    chat.tick(day + 3600)  # a sweep after a quiet day
    assert question.root not in chat.state.threads
    late = blip(PERSON, "anyone?", at=day + 3601, parent=reply)
    chat.feed(late)
    assert chat.decision("ada", late.uri).outcome is Outcome.HANDED


def test_a_thread_with_a_floor_open_is_not_forgotten_however_quiet():
    chat = Chat(CoordinationPolicy(strategy="relevance", k=1, turn_timeout=10 * 86400.0, forget_threads_after=60))
    question = blip(PERSON, "q", at=0)
    chat.feed(question)
    chat.tick(7200)
    assert chat.state.threads[question.root].floor is not None
