"""Dispatch against a real Letta server (scripted model): windows, both reply shapes, own blips, exactly
once across a crash, transient and permanent failures, the circuit breaker, the loop guard."""

from __future__ import annotations

import time
from itertools import count
from pathlib import Path

import pytest

from blipflow.config import Settings
from blipflow.control.coordination import Coordination
from blipflow.dispatch.dispatcher import REPLAN_EVERY, Dispatcher
from blipflow.letta.gateway import AgentCallFailed
from blipflow.store.history import IngestBatch, Store
from flows.dispatch import build_dispatcher
from tests.support.blip_text import content_of
from tests.support.fed_stores import FedStores
from tests.support.frames import T0, blips, commit_frame, uri

HUMAN = "did:plc:human0000000000000000000"
AGENT_A = "did:plc:agenta000000000000000000"
AGENT_B = "did:plc:agentb000000000000000000"
clock = count(1)
STORE_NAME = "s.duckdb"


def fed(dispatcher: Dispatcher) -> FedStores:
    """The dispatcher's control plane and the history store beside it (`dispatcher_for`'s), which ingest feeds
    it from: dispatch itself never opens the history store."""
    return FedStores(Store(Path(dispatcher.plane.url.database).with_name(STORE_NAME)), dispatcher.plane)


def post(stores: FedStores, did: str, content: str, reply_to: str | None = None) -> str:
    """A blip as ingest would store it (and feed it to the control plane)."""
    rkey = f"k{next(clock)}"
    reply = {"root": {"uri": reply_to, "cid": "c"}, "parent": {"uri": reply_to, "cid": "c"}} if reply_to else None
    stores.apply(IngestBatch(blips=blips(commit_frame(did, rkey, T0 + next(clock), content=content, reply=reply))))
    return uri(did, rkey)


def dispatcher_for(tmp_path, letta_server, *agents: dict, **dispatch: float) -> Dispatcher:
    settings = Settings(
        store={"path": tmp_path / STORE_NAME},
        letta={"base_url": letta_server.base_url, "timeout": 30},
        bluesky={"plc_uri": "http://127.0.0.1:9"},  # identities are not resolvable here: DIDs stand in
        agents=list(agents),
        dispatch=dispatch,
    )
    return build_dispatcher(settings)


def replies(stores: FedStores, agent: str | None = None) -> list[str]:
    return [content for who, content in stores.rows(
        "SELECT agent, content FROM replies ORDER BY created_at, position") if agent is None or who == agent]


def deliver_all(dispatcher: Dispatcher) -> list:
    """Rounds of planning and delivering (each agent one window a round) until nothing is left."""
    delivered = []
    while windows := dispatcher.plan():
        delivered += [dispatcher.deliver(window) for window in windows]
    return delivered


@pytest.fixture
def v1_agent(letta_server):
    return letta_server.create_agent("letta_v1_agent")


def test_windows_follow_batch_size_and_max_wait(tmp_path, letta_server, v1_agent):
    dispatcher = dispatcher_for(tmp_path, letta_server,
                                {"name": "scout", "agent_id": v1_agent, "batch_size": 2, "max_wait_seconds": 3600})
    for n in range(5):
        post(fed(dispatcher), HUMAN, f"blip {n}")
    seq = letta_server.model.last_seq()
    delivered = deliver_all(dispatcher)
    assert [d.blips for d in delivered] == [2, 2]  # the fifth waits for company
    asked = letta_server.model.chat_requests(since=seq)
    assert [[content_of(text) for text in a["user_texts"][-2:]]
            for a in asked] == [["blip 0", "blip 1"], ["blip 2", "blip 3"]]
    assert "global group chat" in asked[0]["user_texts"][-2]  # the instructions lead each window
    assert len(replies(fed(dispatcher))) == 2
    assert deliver_all(dispatcher) == []
    dispatcher.agents["scout"] = dispatcher.agents["scout"].model_copy(update={"max_wait_seconds": 0})
    time.sleep(REPLAN_EVERY)  # with no news in the store, waits are looked at again this often
    assert [d.blips for d in deliver_all(dispatcher)] == [1]


def test_a_lane_that_stops_taking_its_own_windows_leaves_the_next_to_the_very_next_look(tmp_path, letta_server,
                                                                                         v1_agent):
    """Planning leaves alone an agent whose lane takes its own next window; once that lane stops (its round
    ended on a retried window, say), the next look must open the agent's window though nothing was written
    since. A look skipped then made `dispatch --until-idle` end with a blip never sent."""
    dispatcher = dispatcher_for(tmp_path, letta_server, {"name": "scout", "agent_id": v1_agent})
    post(fed(dispatcher), HUMAN, "still to be sent")
    try:
        assert dispatcher.plan(frozenset({"scout"})) == []  # hands the blip to scout, whose lane is busy
        assert dispatcher.plan(frozenset({"scout"})) == []
        [window] = dispatcher.plan(frozenset())
    finally:
        dispatcher.close()
    assert (window.agent, window.size) == ("scout", 1)


@pytest.mark.parametrize("kind", ["letta_v1_agent", "sleeptime"])
def test_both_reply_shapes_reach_the_outbox(tmp_path, letta_server, kind):
    agent_id = letta_server.create_agent(kind)
    dispatcher = dispatcher_for(tmp_path, letta_server, {"name": "scout", "agent_id": agent_id})
    post(fed(dispatcher), HUMAN, "what do you think?")
    [delivery] = deliver_all(dispatcher)
    assert delivery.outcome == "answered"
    [reply] = replies(fed(dispatcher))
    assert reply.startswith("echo: ") and reply.endswith("</content>\n</blip>")
    assert content_of(reply) == "what do you think?"


def test_silence_is_recorded_as_such(tmp_path, letta_server, v1_agent):
    dispatcher = dispatcher_for(tmp_path, letta_server, {"name": "scout", "agent_id": v1_agent})
    post(fed(dispatcher), HUMAN, "nothing to add [[silent]]")
    [delivery] = deliver_all(dispatcher)
    assert delivery.outcome == "silent" and replies(fed(dispatcher)) == []


def test_an_agent_never_receives_its_own_blips(tmp_path, letta_server, v1_agent):
    dispatcher = dispatcher_for(tmp_path, letta_server, {"name": "scout", "agent_id": v1_agent, "did": AGENT_A})
    post(fed(dispatcher), AGENT_A, "my own thought")
    post(fed(dispatcher), HUMAN, "a person's thought")
    seq = letta_server.model.last_seq()
    deliver_all(dispatcher)
    seen = " ".join(" ".join(a["user_texts"]) for a in letta_server.model.chat_requests(since=seq))
    assert "a person's thought" in seen and "my own thought" not in seen
    assert fed(dispatcher).rows("SELECT skip_reason FROM deliveries WHERE blip_uri LIKE :own",
                                own=f"at://{AGENT_A}/%") == [("own_blip",)]


def test_a_window_answered_before_a_crash_is_finished_without_sending_it_again(tmp_path, letta_server, v1_agent):
    first = dispatcher_for(tmp_path, letta_server, {"name": "scout", "agent_id": v1_agent})
    post(fed(first), HUMAN, "did you get this?")
    [window] = first.plan()
    # the crash: Letta answered, but the process died before the answer was stored
    blip_list = first.blips.window_blips(window.id)
    first.ledger.mark_sending(window.id)
    from blipflow.dispatch.prompt import window_messages

    first.gateway.send("scout", v1_agent, window_messages(first.agents["scout"], blip_list), window.id)
    seq = letta_server.model.last_seq()
    restarted = dispatcher_for(tmp_path, letta_server, {"name": "scout", "agent_id": v1_agent})
    [again] = restarted.plan()
    assert (again.id, again.state) == (window.id, "sending")
    delivery = restarted.deliver(again)
    assert delivery.outcome == "recovered"
    assert letta_server.model.chat_requests(since=seq) == []  # not sent twice
    [reply] = replies(fed(restarted))
    assert reply.endswith("</content>\n</blip>") and content_of(reply) == "did you get this?"


def test_a_transient_failure_fails_the_window_and_the_retry_delivers_it_once(tmp_path, letta_server, v1_agent):
    dispatcher = dispatcher_for(tmp_path, letta_server, {"name": "scout", "agent_id": v1_agent})
    # Letta's own client tries the model three times; all three fail, so Letta answers 500
    post(fed(dispatcher), HUMAN, "flaky [[status:500*3]]")
    [window] = dispatcher.plan()
    with pytest.raises(AgentCallFailed) as failure:
        dispatcher.deliver(window)
    assert failure.value.transient
    assert dispatcher.plan() == []  # the planner leaves it to the task's retry until the cooldown ends
    assert dispatcher.deliver(window).outcome == "answered"  # Prefect's retry
    assert len(replies(fed(dispatcher))) == 1


def test_an_unknown_agent_is_tried_once_and_its_circuit_opens_at_once(tmp_path, letta_server):
    ghost = "agent-00000000-0000-4000-8000-000000000000"
    dispatcher = dispatcher_for(tmp_path, letta_server, {"name": "ghost", "agent_id": ghost},
                                breaker_failures=5, breaker_cooldown=1.0)
    post(fed(dispatcher), HUMAN, "anyone there?")
    [window] = dispatcher.plan()
    with pytest.raises(AgentCallFailed) as failure:
        dispatcher.deliver(window)
    assert not failure.value.transient  # not retried by Prefect
    assert str(failure.value) == "agent ghost: no such agent on the Letta server (HTTP 404); circuit open, next try in 1 s"
    assert dispatcher.plan() == []  # open after one call: the agent is left alone
    circuit = dispatcher.circuits.stored.all()["ghost"]
    assert (circuit.state, circuit.failures, circuit.reason) == ("open", 1, "no such agent on the Letta server (HTTP 404)")
    restarted = dispatcher_for(tmp_path, letta_server, {"name": "ghost", "agent_id": ghost},
                               breaker_failures=5, breaker_cooldown=1.0)
    assert restarted.plan() == []  # a new process keeps it open for the rest of the cooldown
    time.sleep(1.1)
    [trial] = dispatcher.plan()  # half-open: one more try
    assert trial.state == "failed" and dispatcher.circuits.breakers["ghost"].state == "half_open"


def test_the_loop_guard_ends_a_two_agent_exchange(tmp_path, letta_server):
    a_id, b_id = letta_server.create_agent("letta_v1_agent"), letta_server.create_agent("letta_v1_agent")
    dispatcher = dispatcher_for(
        tmp_path, letta_server,
        {"name": "ada", "agent_id": a_id, "did": AGENT_A, "max_chain_depth": 3},
        {"name": "bob", "agent_id": b_id, "did": AGENT_B, "max_chain_depth": 3},
    )
    post(fed(dispatcher), HUMAN, "hello agents")
    did_of = {"ada": AGENT_A, "bob": AGENT_B}
    for _ in range(10):  # each round: deliver, then publish the replies as blips (what the publish flow does)
        delivered = deliver_all(dispatcher)
        if not delivered:
            break
        for d in delivered:
            answered = dispatcher.blips.window_blips(d.window)[-1].uri
            for text in replies_of_window(dispatcher, d.window):
                post(fed(dispatcher), did_of[d.agent], text, reply_to=answered)
    else:
        pytest.fail("the agents never stopped")
    # each answers the human (chain depth 1), the other's answer (2), the other's answer to that (3);
    # a chain three agent blips deep is sent to no agent
    assert len(replies(fed(dispatcher), "ada")) == 3
    assert len(replies(fed(dispatcher), "bob")) == 3
    depths = {new.chain_depth for new in Coordination(dispatcher.plane).new_blips(0, [AGENT_A, AGENT_B], limit=100)}
    assert depths == {0, 1, 2, 3}
    assert fed(dispatcher).rows(
        "SELECT count(*) FROM deliveries WHERE skip_reason = 'agent_chain_too_deep'") == [(2,)]


def replies_of_window(dispatcher: Dispatcher, window_id: str) -> list[str]:
    return [row[0] for row in fed(dispatcher).rows(
        "SELECT content FROM replies WHERE window_id = :window ORDER BY position", window=window_id)]

