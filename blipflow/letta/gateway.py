"""Talking to Letta: one call per window, the agent's replies out of its answer, and errors sorted into
those worth retrying and those that are not. The only module that imports letta-client."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import letta_client
from letta_client import DefaultHttpxClient, Letta

from blipflow.config import LettaConfig
from blipflow.model.failures import Failure
from blipflow.network import tls

SEND_MESSAGE = "send_message"
# How far back a window's messages are looked for when it is unclear whether they arrived.
RECOVERY_LOOKBACK = 100
MIN_KEPT_OPEN = 20  # connections to Letta kept open, at least (the SDK's own default)


class AgentCallFailed(Failure):
    """A call to an agent failed. `transient`: trying again later may work. `settled`: Letta answered,
    so the call is over; otherwise (a timeout, a dropped connection) Letta may still be working on it.
    `whole_agent`: no call to this agent can work as things are (a refused key, an unknown agent); a
    failure that is neither transient nor whole_agent is Letta refusing this one request."""

    def __init__(self, agent: str, reason: str, *, transient: bool, settled: bool = True,
                 whole_agent: bool = False) -> None:
        super().__init__(f"agent {agent}: {reason}", transient=transient)
        self.agent = agent
        self.reason = reason
        self.settled = settled
        self.whole_agent = whole_agent


class StillAnswering(Exception):
    """The window reached the agent and its answer is not there yet."""


@dataclass(frozen=True)
class Answer:
    replies: list[str]  # empty: the agent chose silence
    letta_ms: float = 0.0  # time spent in the call to Letta


class LettaGateway:
    def __init__(self, config: LettaConfig, *, max_steps: int = 10, agents: int = 1) -> None:
        """`agents`: how many agents are called at once (each its own lane), every one on a connection of its
        own kept open between its calls. The SDK's default pool keeps 20 open and lets 100 exist at all:
        with more agents, calls waited for a connection, and most lanes opened a new one each call."""
        self.timeout = config.timeout
        api_key = config.api_key.get_secret_value() if config.api_key else None
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(agents, MIN_KEPT_OPEN))
        # No retries here: Prefect retries transient failures, and the breaker counts them.
        self.client = Letta(base_url=config.base_url, api_key=api_key, timeout=config.timeout, max_retries=0,
                            http_client=DefaultHttpxClient(limits=limits, timeout=config.timeout, verify=tls.verified()))
        self.max_steps = max_steps

    def with_timeout(self, timeout: float) -> LettaGateway:
        """The same server and key with another timeout (a moderator is given less time than the agents)."""
        other = copy.copy(self)
        other.client, other.timeout = self.client.with_options(timeout=timeout), timeout
        return other

    def tags_of(self, agent: str, agent_id: str) -> list[str]:
        """The tags the agent has at Letta."""
        try:
            return list(self.client.agents.retrieve(agent_id, include=["agent.tags"]).tags or [])
        except letta_client.APIError as error:
            raise classify(agent, error) from None

    def send(self, agent: str, agent_id: str, messages: list[dict[str, str]], window_id: str) -> Answer:
        """Send one window as user messages tagged with the window's id (`otid`), return the replies."""
        tagged = [{**message, "otid": message_otid(window_id, index)} for index, message in enumerate(messages)]
        started = time.perf_counter()
        try:
            # The messages go as plain JSON: the SDK's transform of typed parameters walks every key of every
            # message against its TypedDict (~1 ms of the interpreter a call, a tenth of what dispatch spends
            # on a window), and leaves plain role/content/otid dicts as they are. The answer is read as JSON
            # too: building the SDK's models of every message cost a window as much again.
            response = self.client.agents.messages.with_raw_response.create(
                agent_id, max_steps=self.max_steps, extra_body={"messages": tagged})
            answer = response.json()
        except letta_client.APIError as error:
            raise classify(agent, error) from None
        return Answer(replies_in(listed(fields(answer).get("messages"))), (time.perf_counter() - started) * 1000)

    def answer_already_given(self, agent: str, agent_id: str, window_id: str) -> Answer | None:
        """If a window's messages reached the agent before a crash, the answer it gave then; else None.

        Lets a restarted dispatch finish a window without sending it twice."""
        try:
            page = self.client.agents.messages.with_raw_response.list(agent_id, limit=RECOVERY_LOOKBACK, order="desc")
            listing = page.json()
        except letta_client.APIError as error:
            raise classify(agent, error) from None
        # The latest messages; sorted here because the server's order within the page is not to be relied on.
        recent = sorted(dated(page_items(listing)), key=lambda pair: pair[0])  # this page only: no paging on
        ours = {message_otid(window_id, index) for index in range(len(recent))}
        for position, (sent_at, message) in enumerate(recent):
            if is_user_message(message) and fields(message).get("otid") == message_otid(window_id, 0):
                answer = answer_to([later for _, later in recent[position + 1:]], ours)
                if not answer and datetime.now(timezone.utc) - sent_at < timedelta(seconds=self.timeout):
                    # Nothing yet may mean the agent is still at it (silence looks the same): ask again later.
                    raise StillAnswering(window_id)
                return Answer(replies_in(answer))
        return None


def message_otid(window_id: str, index: int) -> str:
    return f"{window_id}-{index}"


def fields(value: Any) -> dict[str, Any]:
    """A JSON object's fields; none for anything else (what Letta sends is read, never trusted)."""
    return value if isinstance(value, dict) else {}


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def page_items(listing: Any) -> list[Any]:
    """The messages of a page: a list of them, or an object with them as its `items` (as the SDK reads it)."""
    return listed(listing if isinstance(listing, list) else fields(listing).get("items"))


def dated(messages: list[Any]) -> list[tuple[datetime, Any]]:
    """Each message with its `date` (ISO 8601, UTC when it names no zone); one without a date that reads
    cannot be placed among the others, and is left out."""
    placed = []
    for message in messages:
        try:
            date = datetime.fromisoformat(fields(message).get("date"))
        except (TypeError, ValueError):
            continue
        placed.append((date if date.tzinfo else date.replace(tzinfo=timezone.utc), message))
    return placed


def is_user_message(message: Any) -> bool:
    return fields(message).get("message_type") == "user_message"


def answer_to(messages: Iterable[Any], window_otids: set[str]) -> list[Any]:
    """What followed a window's user messages, up to the next user message that is not the window's."""
    taken = []
    for message in messages:
        if is_user_message(message):
            if fields(message).get("otid") in window_otids:
                continue
            break
        taken.append(message)
    return taken


def replies_in(messages: Iterable[Any]) -> list[str]:
    """The agent's replies among the messages of its answer, in order.

    Agents answer either with assistant messages or, like sleeptime agents, only by calling the
    `send_message` tool; both count, and when an answer has both, the assistant messages are the replies.
    """
    assistant: list[str] = []
    sent: list[str] = []
    for message in messages:
        kind = fields(message).get("message_type")
        if kind == "assistant_message":
            text = content_text(fields(message).get("content"))
            if text:
                assistant.append(text)
        elif kind == "tool_call_message":
            for call in tool_calls(message):
                if fields(call).get("name") == SEND_MESSAGE:
                    text = send_message_text(fields(call).get("arguments"))
                    if text:
                        sent.append(text)
    return assistant or sent


def tool_calls(message: Any) -> list[Any]:
    calls = fields(message).get("tool_calls")
    if isinstance(calls, list) and calls:
        return calls
    call = fields(message).get("tool_call")
    return [call] if call is not None else []


def send_message_text(arguments: Any) -> str | None:
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return None
    text = parsed.get("message") if isinstance(parsed, dict) else None
    return text.strip() if isinstance(text, str) and text.strip() else None


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    parts = [fields(part).get("text") for part in listed(content)]
    return "\n".join(part for part in parts if isinstance(part, str)).strip()


AGENT_REFUSED = {401: "Letta refused the API key", 403: "the API key may not use this agent",
                 404: "no such agent on the Letta server"}


def classify(agent: str, error: letta_client.APIError) -> AgentCallFailed:
    """Timeouts, lost connections, 429 and 5xx may pass; a bad key or an unknown agent will not (for any
    window of the agent), nor will a refused request (400, 422: for this window)."""
    if isinstance(error, letta_client.APITimeoutError):
        return AgentCallFailed(agent, "Letta did not answer in time", transient=True, settled=False)
    if isinstance(error, letta_client.APIConnectionError):
        return AgentCallFailed(agent, f"cannot reach Letta ({error})", transient=True, settled=False)
    if isinstance(error, letta_client.APIStatusError):
        status = error.status_code
        transient = status == 429 or status >= 500 or status == 409
        meaning = {**AGENT_REFUSED, 422: "Letta rejected the request"}.get(status, "")
        return AgentCallFailed(agent, f"{meaning or 'Letta answered'} (HTTP {status})", transient=transient,
                               whole_agent=status in AGENT_REFUSED)
    return AgentCallFailed(agent, f"Letta error: {error}", transient=False)
