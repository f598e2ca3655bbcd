"""Reading an agent's answer, as JSON of letta-client's own message types; sorting Letta's errors."""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import httpx
import letta_client
import pytest
from letta_client.types.agents import (
    AssistantMessage,
    ReasoningMessage,
    ToolCallMessage,
    UserMessage,
)
from letta_client.types.agents.tool_call import ToolCall

from blipflow.config import LettaConfig
from blipflow.dispatch.breaker import Breaker
from blipflow.letta.gateway import LettaGateway, answer_to, classify, dated, replies_in
from tests.support.fake_letta import FakeLetta

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


def wire(message: letta_client.BaseModel) -> dict:
    """A message as Letta sends it, which the gateway reads without building the SDK's models."""
    return message.model_dump(mode="json")


def assistant(text: str) -> dict:
    return wire(AssistantMessage(id="m", date=NOW, content=text, message_type="assistant_message"))


def send_message(arguments: str, name: str = "send_message") -> dict:
    call = ToolCall(name=name, arguments=arguments, tool_call_id="t")
    return wire(ToolCallMessage(id="m", date=NOW, tool_call=call, message_type="tool_call_message"))


def thinking() -> dict:
    return wire(ReasoningMessage(id="m", date=NOW, reasoning="hmm", message_type="reasoning_message"))


def test_assistant_messages_are_the_replies():
    assert replies_in([thinking(), assistant("first"), assistant("  "), assistant("second")]) == ["first", "second"]


def test_send_message_tool_calls_are_the_replies_of_agents_without_assistant_messages():
    messages = [thinking(), send_message('{"message": "from a sleeptime agent"}'), send_message('{"q": 1}', "web_search")]
    assert replies_in(messages) == ["from a sleeptime agent"]


def test_an_answer_with_both_shapes_counts_the_assistant_messages_once():
    assert replies_in([send_message('{"message": "hello"}'), assistant("hello")]) == ["hello"]


def test_no_reply_is_silence():
    assert replies_in([thinking(), send_message("not json"), send_message('{"message": ""}')]) == []


def test_recovery_reads_past_the_window_s_own_messages_up_to_the_next_user_message():
    own = wire(UserMessage(id="u1", date=NOW, content="second blip", message_type="user_message", otid="w-1"))
    later = wire(UserMessage(id="u2", date=NOW, content="next window", message_type="user_message", otid="v-0"))
    assert answer_to([own, assistant("a"), later, assistant("b")], {"w-0", "w-1"}) == [assistant("a")]


def test_recovery_places_messages_by_their_dates_and_leaves_out_one_without():
    naive = {**assistant("naive"), "date": "2026-11-22T00:00:01"}
    assert dated([naive, {**assistant("none"), "date": None}, "not a message", assistant("aware")]) == [
        (datetime(2026, 11, 22, 0, 0, 1, tzinfo=timezone.utc), naive), (NOW, assistant("aware"))]


def test_each_of_many_agents_keeps_its_own_connection_to_letta_between_calls():
    """Every agent calls Letta from a lane of its own: with more agents than the SDK's pool keeps open (20)
    or lets exist (100), calls waited for a connection and most opened a new one each time."""
    agents = 150
    fake = FakeLetta(latency_ms=200).start()
    gateway = LettaGateway(LettaConfig(base_url=fake.base_url, timeout=30), agents=agents)
    ids = [fake.create_agent() for _ in range(agents)]
    try:
        with ThreadPoolExecutor(agents) as lanes:
            for round_ in range(2):
                answers = lanes.map(lambda n: gateway.send(f"a{n}", ids[n], [{"role": "user", "content": "hi"}],
                                                           f"w{round_}-{n}"), range(agents))
                assert all(answer.replies == ["echo: hi"] for answer in answers)
    finally:
        fake.stop()
    assert fake.calls == 2 * agents
    assert fake.connections <= agents


def status_error(status: int) -> letta_client.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/agents/a/messages")
    response = httpx.Response(status, request=request, json={"detail": "x"})
    return letta_client.Letta(base_url="http://127.0.0.1:1")._make_status_error("x", body=None, response=response)


@pytest.mark.parametrize("status, transient, words", [
    (429, True, "HTTP 429"), (500, True, "HTTP 500"), (503, True, "HTTP 503"),
    (401, False, "Letta refused the API key (HTTP 401)"), (404, False, "no such agent on the Letta server (HTTP 404)"),
    (422, False, "Letta rejected the request (HTTP 422)"),
])
def test_errors_are_sorted_by_whether_a_retry_may_help(status, transient, words):
    failure = classify("scout", status_error(status))
    assert failure.transient is transient
    assert failure.whole_agent is (status in (401, 404))  # no call to the agent can work; 422: this request
    assert str(failure).startswith("agent scout: ") and words in str(failure)


def test_timeouts_and_lost_connections_are_transient():
    request = httpx.Request("POST", "http://127.0.0.1/")
    assert classify("scout", letta_client.APITimeoutError(request)).transient
    assert classify("scout", letta_client.APIConnectionError(request=request)).transient


def test_the_breaker_opens_after_k_failures_half_opens_after_the_cooldown_and_closes_on_success():
    breaker = Breaker("scout", failures_to_open=3, cooldown=10)
    for now in (0, 1, 2):
        assert breaker.allows(now)
        assert breaker.failed(now, "HTTP 503") is (now == 2)  # open after it: the caller stops calling
    assert breaker.state == "open" and not breaker.allows(5)
    assert breaker.allows(12) and breaker.state == "half_open"
    assert breaker.failed(12, "HTTP 503")  # the trial failed: open again, for another cooldown
    assert not breaker.allows(15) and breaker.allows(22)
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.failures == 0 and breaker.reason is None


def test_a_failure_that_no_call_can_escape_opens_the_breaker_at_once():
    breaker = Breaker("scout", failures_to_open=5, cooldown=10)
    assert breaker.failed(0, "Letta refused the API key (HTTP 401)", at_once=True)
    assert (breaker.state, breaker.failures, breaker.reason) == ("open", 1, "Letta refused the API key (HTTP 401)")
    assert not breaker.allows(9) and breaker.allows(10)
