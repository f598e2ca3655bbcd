"""Each strategy, on a small chat of three agents (ada: postgres, bo: rust + cooking, cy: music)."""


from blipflow.coordination.decisions import Outcome, Reason
from blipflow.coordination.strategies import STRATEGIES
from blipflow.model.coordination_policy import STRATEGY_NAMES, CoordinationPolicy
from tests.coordination.chat import PERSON, Chat, blip


def policy(**settings) -> CoordinationPolicy:
    return CoordinationPolicy(**settings)


def test_every_strategy_the_policy_accepts_is_implemented():
    assert set(STRATEGIES) == set(STRATEGY_NAMES)


def test_broadcast_hands_every_blip_to_every_other_agent():
    chat = Chat(policy(strategy="broadcast", k=1))
    question = blip(PERSON, "hello all", at=1)
    chat.feed(question)
    answer = blip("did:plc:ada", "hi", at=2, parent=question)
    chat.feed(answer)
    assert chat.handed(question.uri) == ["ada", "bo", "cy"]
    assert chat.handed(answer.uri) == ["bo", "cy"]
    assert chat.decision("ada", answer.uri).reason is Reason.OWN_BLIP


def test_relevance_prefers_the_skilled_then_those_who_took_part():
    chat = Chat(policy(strategy="relevance", k=1, queue_length=0))
    question = blip(PERSON, "any advice on #rust lifetimes?", at=1)
    chat.feed(question)
    assert chat.handed(question.uri) == ["bo"]
    assert chat.decision("ada", question.uri).reason is Reason.NOT_SELECTED
    chat.feed(blip("did:plc:bo", "sure", at=2, parent=question))
    follow_up = blip(PERSON, "and in general?", at=3, parent=question)  # answers the person's own blip
    chat.feed(follow_up)
    assert chat.handed(follow_up.uri) == ["bo"]  # took part in the thread


def test_relevance_with_nobody_fit_hands_a_persons_blip_to_the_least_recently_chosen():
    chat = Chat(policy(strategy="relevance", k=2))
    first, second = blip(PERSON, "good morning", at=1), blip(PERSON, "what a day", at=2)
    chat.feed(first)
    chat.feed(second)
    assert chat.handed(first.uri) == ["ada"] and chat.handed(second.uri) == ["bo"]
    assert "nobody relevant" in chat.decision("cy", second.uri).detail


def test_relevance_top_k_counts_the_addressed_first():
    chat = Chat(policy(strategy="relevance", k=2))
    question = blip(PERSON, "@cy.test how is #postgres with #rust?", at=1)
    chat.feed(question)
    assert sorted(chat.handed(question.uri)) == ["ada", "cy"]  # cy addressed, then the better of two skilled (tie: roster)
    assert chat.decision("cy", question.uri).reason is Reason.MENTIONED
    assert chat.latest("bo", question.uri).outcome is Outcome.WAITING  # next in line (queue_length 1)


def test_round_robin_takes_turns_across_blips():
    chat = Chat(policy(strategy="round_robin", k=1, queue_length=0))
    blips = [blip(PERSON, f"q{n}", at=n) for n in range(4)]
    for b in blips:
        chat.feed(b)
    assert [chat.handed(b.uri) for b in blips] == [["ada"], ["bo"], ["cy"], ["ada"]]


def test_random_is_seeded_by_the_policy_and_the_blip():
    blips = [blip(PERSON, f"q{n}", at=n) for n in range(12)]

    def draws(seed: int) -> list[list[str]]:
        chat = Chat(policy(strategy="random", k=1, seed=seed, queue_length=0))
        for b in blips:
            chat.feed(b)
        return [chat.handed(b.uri) for b in blips]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert {name for hand in draws(7) for name in hand} == {"ada", "bo", "cy"}


def test_sequential_hands_on_after_each_turn_carrying_the_replies_before():
    chat = Chat(policy(strategy="sequential", order=["cy", "ada", "bo"], turn_timeout=60))
    question = blip(PERSON, "tell me a story, one line each", at=0)
    chat.feed(question)
    assert chat.handed(question.uri) == ["cy"]
    assert {d.agent: d.outcome for d in chat.rounds[-1].decisions if d.agent != "cy"} == \
        {"ada": Outcome.WAITING, "bo": Outcome.WAITING}
    line_one = blip("did:plc:cy", "once", at=5, parent=question)
    chat.feed(line_one)
    assert sorted((d.agent, d.uri) for d in chat.rounds[-1].decisions if d.outcome is Outcome.HANDED) == \
        sorted([("ada", question.uri), ("ada", line_one.uri)])
    line_two = blip("did:plc:ada", "upon a time", at=9, parent=line_one)
    chat.feed(line_two)
    assert {d.uri for d in chat.rounds[-1].decisions if d.agent == "bo" and d.outcome is Outcome.HANDED} == \
        {question.uri, line_one.uri, line_two.uri}
    assert chat.state.thread(question.uri).floor.speakers.keys() == {"bo"}


def test_a_silent_speaker_passes_the_floor_after_its_turn_timeout():
    chat = Chat(policy(strategy="relevance", k=1, queue_length=1, turn_timeout=30))
    question = blip(PERSON, "#rust or #postgres?", at=0)
    chat.feed(question)
    assert chat.handed(question.uri) == ["ada"]
    assert chat.latest("bo", question.uri).outcome is Outcome.WAITING
    chat.tick(29)
    assert chat.handed(question.uri) == ["ada"]
    chat.tick(30)
    assert chat.handed(question.uri) == ["ada", "bo"]
    assert chat.decision("bo", question.uri).reason is Reason.FLOOR_PASSED
    chat.tick(100)  # bo stays silent too; nobody is left in line
    assert chat.state.thread(question.uri).floor is None and chat.state.floors_due == {}


def test_when_the_speakers_answer_those_in_line_are_skipped_with_the_reason():
    chat = Chat(policy(strategy="relevance", k=1, queue_length=1, turn_timeout=30))
    question = blip(PERSON, "#rust or #postgres?", at=0)
    chat.feed(question)
    chat.feed(blip("did:plc:ada", "postgres, clearly", at=10, parent=question))
    bo = chat.decision("bo", question.uri)
    assert (bo.outcome, bo.reason) == (Outcome.SKIPPED, Reason.NOT_YOUR_TURN)


def test_a_new_persons_blip_moves_the_floor_on():
    chat = Chat(policy(strategy="sequential", turn_timeout=60))
    question = blip(PERSON, "one by one please", at=0)
    chat.feed(question)
    interruption = blip(PERSON, "@cy.test actually, you first", at=1, parent=question)
    chat.feed(interruption)
    assert chat.decision("cy", question.uri).reason is Reason.FLOOR_PASSED  # carried with the blip cy is handed
    assert chat.decision("cy", interruption.uri).reason is Reason.MENTIONED
    floor = chat.state.thread(question.uri).floor
    assert (floor.about, list(floor.speakers), floor.queue) == (interruption.uri, ["ada"], ("bo",))
    assert floor.waiting == {"bo": (question.uri, interruption.uri)}  # still in line, for both


def test_sequential_says_so_when_nobody_in_its_order_is_eligible():
    chat = Chat(policy(strategy="sequential", order=["ada"]))
    mine = blip("did:plc:ada", "my own", at=0)
    round = chat.feed(mine)
    assert chat.handed(mine.uri) == [] and round.selections[0].note == "an agent's blip goes only to the agents it addresses"
    chat = Chat(policy(strategy="sequential", order=["ada"], agent_blip_k=1))
    mine = blip("did:plc:ada", "my own", at=0)
    round = chat.feed(mine)
    assert chat.handed(mine.uri) == [] and round.selections[0].note == "nobody in the order is eligible"
    assert chat.decision("bo", mine.uri).detail == "not selected by sequential (nobody in the order is eligible)"
