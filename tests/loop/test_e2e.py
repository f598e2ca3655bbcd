"""The whole loop of thought.stream on real peers — listen → format → agent → publish → propagate →
continue: a human's blip on the local PDS reaches `blipflow run` through the Jetstream stand-in,
`blipflow dispatch` hands it to a real Letta agent (scripted model), `blipflow publish-replies` posts the
answer as a blip of the agent's own account, and that answer comes back through the stream like any
other blip. Counts are of records on the PDS (com.atproto.repo.listRecords)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from blipflow.control import tables
from tests.support.agent_accounts import agent_account
from tests.support.chat_loop import ChatLoop, no_secrets_in, records, settled_count
from tests.support.ingest_process import wait_for
from tests.support.pds_proxy import PdsProxy


def stored_blip(loop: ChatLoop, uri: str) -> tuple | None:
    rows = loop.store.query_all("SELECT did, content, reply_parent_uri, reply_root_uri FROM blips WHERE uri = ?", [uri])
    return rows[0] if rows else None


def test_an_agent_answers_a_human_once_threaded_and_the_answer_comes_back_through_the_stream(
        make_loop, atproto_network, human_account, letta_server):
    scout = agent_account(atproto_network, "scout")
    loop = make_loop(scout.config("scout", letta_server.create_agent("letta_v1_agent"))).start()

    question, question_cid = atproto_network.post_blip(human_account, "Anyone out there? [[reply:Hello, human!]]")

    assert settled_count(scout, 1) == 1
    [answer] = records(scout)
    assert answer.value["content"] == "Hello, human!"
    assert answer.value["reply"] == {"root": {"uri": question, "cid": question_cid},
                                     "parent": {"uri": question, "cid": question_cid}}
    ingested = wait_for(lambda: stored_blip(loop, answer.uri), 20, "the answer ingested")
    assert ingested == (scout.did, "Hello, human!", question, question)  # the thread can be rebuilt
    assert loop.rows("SELECT skip_reason FROM deliveries WHERE blip_uri = :uri", uri=answer.uri) == [
        ("own_blip",)]  # its own answer is never sent back to it
    assert loop.reply_states() == ["posted"]
    no_secrets_in(loop, scout)


def test_two_agents_answer_the_human_never_themselves_and_the_loop_guard_ends_their_exchange(
        make_loop, atproto_network, human_account, letta_server):
    ada, bob = agent_account(atproto_network, "ada"), agent_account(atproto_network, "bob")
    guard = {"max_chain_depth": 2}  # an agent answers an agent once; an answer to that answer goes to no one
    loop = make_loop(ada.config("ada", letta_server.create_agent("letta_v1_agent"), **guard),
                     bob.config("bob", letta_server.create_agent("letta_v1_agent"), **guard)).start()

    question, _ = atproto_network.post_blip(human_account, "What do you two think?")

    # each answers the human (depth 1) and the other's answer (depth 2); depth 2 goes no further
    assert settled_count(ada, 2) == 2
    assert settled_count(bob, 2) == 2
    for me, other in ((ada, bob), (bob, ada)):
        parents = sorted(record.value["reply"]["parent"]["uri"] for record in records(me))
        theirs = [record.uri for record in records(other) if record.value["reply"]["parent"]["uri"] == question]
        assert parents == sorted([question, *theirs])  # the human's blip and the other agent's answer to it
    skips = dict(loop.rows("SELECT skip_reason, count(*) FROM deliveries WHERE skip_reason IS NOT NULL "
                           "GROUP BY skip_reason"))
    assert skips == {"own_blip": 4, "agent_chain_too_deep": 2}
    with loop.plane.reading() as session:
        assert session.execute(select(tables.Reply.agent, func.count()).where(tables.Reply.state == "posted")
                               .group_by(tables.Reply.agent).order_by(tables.Reply.agent)).all() == [("ada", 2), ("bob", 2)]
    no_secrets_in(loop, ada, bob)


def test_publish_killed_after_the_pds_took_the_record_posts_it_exactly_once_after_a_restart(
        make_loop, atproto_network, human_account, letta_server):
    scout = agent_account(atproto_network, "scout")
    front = PdsProxy(atproto_network.pds_url).start()
    try:
        loop = make_loop(scout.config("scout", letta_server.create_agent("letta_v1_agent"), front.url)).start()
        front.hold_answers(1)

        atproto_network.post_blip(human_account, "Say it once. [[reply:Once.]]")

        assert front.held.wait(90), "the create never reached the PDS"
        loop.kill("publish")  # the PDS has the record; the process dies before it notes it
        assert [r.value["content"] for r in records(scout)] == ["Once."]
        assert loop.reply_states() == ["queued"]
        assert loop.posts() == 0
        front.release_held()

        loop.start("publish")
        wait_for(lambda: loop.reply_states() == ["posted"], 60, "the reply posted")
        assert settled_count(scout, 1) == 1
        assert front.calls() == [200, 500]  # the second create found the key taken, by the same record
        assert f"{records(scout)[0].uri} was already posted" in loop.logs()
        no_secrets_in(loop, scout)
    finally:
        front.stop()


def test_replies_wait_while_the_pds_is_down_and_go_out_once_it_is_back(
        make_loop, atproto_network, human_account, letta_server):
    scout = agent_account(atproto_network, "scout")
    loop = make_loop(scout.config("scout", letta_server.create_agent("letta_v1_agent"))).start()
    atproto_network.post_blip(human_account, "Warm up. [[reply:Ready.]]")
    assert settled_count(scout, 1) == 1  # the publisher has a session now; the PDS will go away under it
    seq = letta_server.model.last_seq()

    atproto_network.post_blip(human_account, "Answer me slowly. [[sleep:4]] [[reply:Slow but sure.]]")

    wait_for(lambda: letta_server.model.chat_requests(since=seq), 60, "the blip to reach the agent's model")
    atproto_network.stop_pds()
    try:
        wait_for(lambda: "queued" in loop.reply_states(), 60, "the reply queued")
        loop.processes["publish"].wait_for_log("cannot reach its PDS", timeout=30)
        time.sleep(3)  # a few failed attempts while the PDS is away
    finally:
        atproto_network.start_pds()
    wait_for(lambda: loop.reply_states() == ["posted"] * 2, 90, "the reply posted")
    assert settled_count(scout, 2) == 2
    assert sorted(r.value["content"] for r in records(scout)) == ["Ready.", "Slow but sure."]
    assert loop.logs().count("logged in to") == 1  # the session outlived the PDS's restart
    no_secrets_in(loop, scout)
