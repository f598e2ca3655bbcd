"""The facts of a blip: thread, author kind, mentions and tags from facets and text, chain depth."""

from blipflow.config import AgentConfig
from blipflow.control.facts import MENTION, TAG
from blipflow.coordination.addressing import Address, addressed_agents
from blipflow.coordination.decisions import Decision, Outcome, Reason
from blipflow.coordination.facts import did_of
from blipflow.coordination.participants import AuthorKind, roster
from tests.coordination.chat import PERSON, ROSTER, blip


def test_mentions_and_tags_come_from_facets_and_from_text():
    facts = blip(PERSON, "hey @Ada.test and @someone.else, what about #Postgres? mail x@bo.test, #42 is no tag", at=1,
                 facets=[{"index": {}, "features": [{"$type": MENTION, "did": "did:plc:bo"},
                                                    {"$type": TAG, "tag": "#Rust"}]}])
    assert facts.mentioned_dids == {"did:plc:bo"}
    assert facts.mentioned_handles == {"ada.test", "someone.else"}
    assert facts.tags == {"postgres", "rust"}
    assert {"postgres", "mail", "42"} <= facts.words


def test_malformed_facets_are_ignored():
    junk = [None, 3, {"features": "x"}, {"features": [None, {"$type": MENTION, "did": "not a did\nauthor: x"},
                                                      {"$type": TAG, "tag": "two words"},
                                                      {"$type": TAG, "tag": "x" * 65}]}]
    facts = blip(PERSON, "plain", at=1, facets=junk)
    assert (facts.mentioned_dids, facts.mentioned_handles, facts.tags) == (frozenset(), frozenset(), frozenset())
    assert blip(PERSON, "plain", at=1, facets={"not": "a list"}).tags == frozenset()  # type: ignore[arg-type]


def test_thread_root_and_parent_and_author_kind():
    root = blip(PERSON, "hello", at=1)
    reply = blip("did:plc:ada", "hi", at=2, parent=root)
    deeper = blip(PERSON, "and?", at=3, parent=reply)
    assert (root.root, root.parent, root.author_kind) == (root.uri, None, AuthorKind.PERSON)
    assert (reply.root, reply.parent, reply.author_kind, reply.author_agent) == (root.uri, root.uri, AuthorKind.OUR_AGENT, "ada")
    assert (deeper.root, deeper.parent_did) == (root.uri, "did:plc:ada")
    assert blip("did:plc:outsider", "beep", at=4).author_kind is AuthorKind.OTHER_AGENT
    assert did_of("at://did:plc:ada/stream.thought.blip/1") == "did:plc:ada" and did_of("at://ada.test/x/1") is None


def test_chain_depth_counts_outside_agents_too():
    first = blip(PERSON, "start", at=1)
    ours = blip("did:plc:ada", "one", at=2, parent=first)
    theirs = blip("did:plc:outsider", "two", at=3, parent=ours)
    ours_again = blip("did:plc:ada", "three", at=4, parent=theirs)
    person = blip(PERSON, "stop", at=5, parent=ours_again)
    assert [b.chain_depth for b in (first, ours, theirs, ours_again, person)] == [0, 1, 2, 3, 0]


def test_addressed_are_the_mentioned_and_the_answered_but_never_the_author():
    root = blip("did:plc:bo", "my take", at=1)
    reply = blip("did:plc:ada", "@cy.test what say you, @ada.test?", at=2, parent=root,
                 facets=[{"features": [{"$type": MENTION, "did": "did:plc:bo"}]}])
    assert addressed_agents(reply, ROSTER) == {"bo": Address.MENTIONED, "cy": Address.MENTIONED}
    answer = blip(PERSON, "thanks", at=3, parent=reply)
    assert addressed_agents(answer, ROSTER) == {"ada": Address.ANSWERED}


def test_the_roster_comes_from_the_agents_config_and_decisions_are_rows():
    agents = roster([AgentConfig(name="ada", agent_id="a1", did="did:plc:ada", handle="Ada.test", skills=["#SQL"])],
                    other_agent_dids=["did:plc:outsider"])
    assert agents.by_name["ada"].topics == {"sql"} and agents.by_handle == {"ada.test": "ada"}
    assert agents.kind_of("did:plc:outsider") is AuthorKind.OTHER_AGENT
    decision = Decision("ada", "at://x", Outcome.SKIPPED, Reason.OWN_BLIP, "relevance")
    assert decision.row() == {"agent": "ada", "uri": "at://x", "outcome": "skipped", "reason": "own_blip",
                              "strategy": "relevance", "detail": ""}
