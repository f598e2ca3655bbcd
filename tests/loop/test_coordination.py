"""Who speaks, on real peers: three agents with their own skills and accounts on the local PDS, real Letta
agents (scripted model), the whole loop as `blipflow` processes. Addressing wins, a skill question goes to
the agent that has the skill, a termination token closes a thread to agents — and the ledger and
`blipflow why` say why each agent was or was not handed each blip."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.agent_accounts import agent_account
from tests.support.chat_loop import no_secrets_in, records, settled_count
from tests.support.ingest_process import PROJECT_ROOT, wait_for

SKILLS = {"ada": ["postgres"], "bo": ["rust"], "cy": ["music"]}


def three_agents(make_loop, atproto_network, letta_server, **coordination):
    accounts = {name: agent_account(atproto_network, name) for name in SKILLS}
    loop = make_loop(*(account.config(name, letta_server.create_agent("letta_v1_agent"), skills=SKILLS[name])
                       for name, account in accounts.items()), coordination=coordination).start()
    return loop, accounts


def decided(loop, uri: str) -> dict[str, str]:
    """agent → why it was handed the blip, or why not."""
    return dict(loop.rows("SELECT agent, coalesce(handed_for, skip_reason) FROM deliveries WHERE blip_uri = :uri",
                          uri=uri))


def why(loop, uri: str) -> dict[str, tuple[str, str]]:
    result = subprocess.run([sys.executable, "-m", "cli", "-c", str(loop.config), "why", uri, "--output", "json"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=loop.env)
    assert result.returncode == 0, result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    return {verdict["agent"]: (verdict["outcome"], verdict["reason"]) for verdict in verdicts}


def test_the_mentioned_agent_answers_alone_and_a_skill_question_goes_to_the_skilled_one(
        make_loop, atproto_network, human_account, letta_server):
    loop, agents = three_agents(make_loop, atproto_network, letta_server, strategy="relevance", k=1)
    ada, bo, cy = agents["ada"], agents["bo"], agents["cy"]

    mention, _ = atproto_network.post_blip(human_account, f"@{bo.handle} is this safe? [[reply:It is.]]")
    assert settled_count(bo, 1) == 1
    skill, _ = atproto_network.post_blip(human_account, "How do I vacuum a #postgres table? [[reply:VACUUM it.]]")
    assert settled_count(ada, 1) == 1

    assert len(records(bo)) == 1 and len(records(cy)) == 0  # nobody else spoke, to either
    assert [r.value["reply"]["parent"]["uri"] for r in records(bo)] == [mention]
    assert [r.value["reply"]["parent"]["uri"] for r in records(ada)] == [skill]
    assert decided(loop, mention) == {"ada": "not_selected", "bo": "mentioned", "cy": "not_selected"}
    assert decided(loop, skill) == {"ada": "selected", "bo": "not_selected", "cy": "not_selected"}
    assert why(loop, mention) == {"ada": ("skipped", "not_selected"), "bo": ("handed", "mentioned"),
                                  "cy": ("skipped", "not_selected")}
    # each agent's answer is its own (never handed back) and starts no exchange: nobody else is addressed
    for answer in (records(bo)[0].uri, records(ada)[0].uri):
        wait_for(lambda answer=answer: len(decided(loop, answer)) == 3, 30, "the answer decided for every agent")
        assert sorted(decided(loop, answer).values()) == ["not_selected", "not_selected", "own_blip"]
    no_secrets_in(loop, ada, bo, cy)


def test_a_reply_with_the_termination_token_closes_the_thread_to_every_agent(
        make_loop, atproto_network, human_account, letta_server, scripted_model):
    scripted_model.script({"match": "Say goodbye, all of you", "reply": "That is all from me. GOODBYE",
                           "times": None})
    loop, agents = three_agents(make_loop, atproto_network, letta_server, strategy="broadcast",
                                termination_token="GOODBYE")

    question, question_cid = atproto_network.post_blip(human_account, "Say goodbye, all of you.")
    for account in agents.values():  # each was handed the question before any answer closed the thread
        assert settled_count(account, 1) == 1
    answers = [records(account)[0].uri for account in agents.values()]
    for answer in answers:
        wait_for(lambda answer=answer: len(decided(loop, answer)) == 3, 30, "the answer decided for every agent")
        assert sorted(decided(loop, answer).values()) == ["own_blip", "thread_closed", "thread_closed"]

    ref = {"uri": question, "cid": question_cid}
    again, _ = atproto_network.post_blip(human_account, f"@{agents['ada'].handle} one more thing?",
                                         reply={"root": ref, "parent": ref})
    wait_for(lambda: len(decided(loop, again)) == 3, 60, "the human's blip decided")
    assert decided(loop, again) == {name: "thread_closed" for name in agents}  # even a mention cannot reopen it
    assert why(loop, again)["ada"] == ("skipped", "thread_closed")


def test_a_moderator_agent_chooses_who_answers_and_a_useless_answer_falls_back_to_relevance(
        make_loop, atproto_network, human_account, letta_server, scripted_model):
    scripted_model.script({"match": "Q-moderated-1", "reply": "cy", "times": 1},
                          {"match": "Q-moderated-2", "reply": "zed, probably", "times": 1})
    accounts = {name: agent_account(atproto_network, name) for name in SKILLS}
    chair = {"name": "chair", "agent_id": letta_server.create_agent("letta_v1_agent")}
    loop = make_loop(*(account.config(name, letta_server.create_agent("letta_v1_agent"), skills=SKILLS[name])
                       for name, account in accounts.items()), chair,
                     coordination={"strategy": "moderator", "moderator": "chair", "k": 1}).start()

    chosen, _ = atproto_network.post_blip(human_account, "Q-moderated-1: how do I vacuum a #postgres table? [[reply:Sure.]]")
    assert settled_count(accounts["cy"], 1) == 1  # the moderator's choice, though ada has the skill
    fallback, _ = atproto_network.post_blip(human_account, "Q-moderated-2: and #postgres indexes? [[reply:B-trees.]]")
    assert settled_count(accounts["ada"], 1) == 1

    assert len(records(accounts["bo"])) == 0 and len(records(accounts["cy"])) == 1
    assert decided(loop, chosen) == {"ada": "not_selected", "bo": "not_selected", "cy": "selected"}  # never the chair
    assert decided(loop, fallback) == {"ada": "selected", "bo": "not_selected", "cy": "not_selected"}
    [detail] = loop.rows("SELECT detail FROM deliveries WHERE blip_uri = :uri AND agent = 'bo'", uri=fallback)
    assert detail[0].startswith("not selected by moderator (fell back to relevance: unknown agents dropped: "
                                "'zed, probably'")


def test_a_thread_that_reached_its_max_agent_turns_calls_no_agent_again(
        make_loop, atproto_network, human_account, letta_server):
    loop, agents = three_agents(make_loop, atproto_network, letta_server, strategy="relevance", k=1,
                                max_agent_turns=1)
    question, question_cid = atproto_network.post_blip(human_account, "Vacuum a #postgres table? [[reply:Yes.]]")
    assert settled_count(agents["ada"], 1) == 1
    [answer] = records(agents["ada"])
    wait_for(lambda: len(decided(loop, answer.uri)) == 3, 30, "the answer decided for every agent")
    assert decided(loop, answer.uri) == {"ada": "own_blip", "bo": "thread_closed", "cy": "thread_closed"}

    ref = {"uri": question, "cid": question_cid}
    again, _ = atproto_network.post_blip(human_account, f"@{agents['ada'].handle} and #rust? [[reply:No.]]",
                                         reply={"root": ref, "parent": {"uri": answer.uri, "cid": answer.cid}})
    wait_for(lambda: len(decided(loop, again)) == 3, 60, "the follow-up decided")
    assert decided(loop, again) == {name: "thread_closed" for name in agents}
    assert settled_count(agents["ada"], 1) == 1 and records(agents["bo"]) == [] == records(agents["cy"])
