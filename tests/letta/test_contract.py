"""The same cases against the real Letta server and the fake, through the gateway dispatch uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import pytest

from blipflow.config import LettaConfig
from blipflow.letta.gateway import AgentCallFailed, LettaGateway
from tests.support.fake_letta import FakeLetta


@dataclass
class Peer:
    base_url: str
    create_agent: Callable[[str], str]


@pytest.fixture(scope="module")
def fake_letta() -> Iterator[FakeLetta]:
    fake = FakeLetta().start()
    yield fake
    fake.stop()


@pytest.fixture(params=["fake", "real"])
def peer(request) -> Peer:
    if request.param == "fake":
        fake = request.getfixturevalue("fake_letta")
        return Peer(fake.base_url, fake.create_agent)
    server = request.getfixturevalue("letta_server")
    return Peer(server.base_url, lambda kind: server.create_agent(kind))


def gateway(peer: Peer) -> LettaGateway:
    return LettaGateway(LettaConfig(base_url=peer.base_url, timeout=30))


def user(*texts: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text} for text in texts]


@pytest.mark.parametrize("kind", ["letta_v1_agent", "sleeptime"])
def test_an_agent_answers_the_last_of_several_messages_once(peer, kind):
    agent = peer.create_agent(kind)
    answer = gateway(peer).send("scout", agent, user("first", "second"), "w1")
    assert answer.replies == ["echo: second"]


def test_silence_is_no_reply(peer):
    agent = peer.create_agent("letta_v1_agent")
    assert gateway(peer).send("scout", agent, user("quiet [[silent]]"), "w1").replies == []


def test_an_unknown_agent_is_a_permanent_failure(peer):
    with pytest.raises(AgentCallFailed) as failure:
        gateway(peer).send("ghost", "agent-00000000-0000-4000-8000-000000000000", user("hi"), "w1")
    assert str(failure.value) == "agent ghost: no such agent on the Letta server (HTTP 404)"
    assert not failure.value.transient and failure.value.settled


def test_a_failing_model_is_a_transient_failure_and_the_next_call_works(peer):
    agent = peer.create_agent("letta_v1_agent")
    client = gateway(peer)
    with pytest.raises(AgentCallFailed) as failure:
        client.send("scout", agent, user("flaky [[status:500*3]]"), "w1")
    assert failure.value.transient and failure.value.settled
    assert client.send("scout", agent, user("flaky [[status:500*3]]"), "w2").replies == ["echo: flaky"]


@pytest.mark.parametrize("kind", ["letta_v1_agent", "sleeptime"])
def test_an_answered_window_can_be_found_again_by_its_id(peer, kind):
    agent = peer.create_agent(kind)
    client = gateway(peer)
    client.send("scout", agent, user("one", "two"), "w1")
    client.send("scout", agent, user("three"), "w2")
    assert client.answer_already_given("scout", agent, "w1").replies == ["echo: two"]
    assert client.answer_already_given("scout", agent, "w2").replies == ["echo: three"]
    assert client.answer_already_given("scout", agent, "never-sent") is None
