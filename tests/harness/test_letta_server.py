"""The Letta test harness: the scripted model alone, then a REAL Letta 0.16.8 server driven by it,
through letta-client from the project venv.

What these pin down about Letta 0.16.8 (the dispatch tests rely on it):
- replies: letta_v1_agent -> one assistant_message; memgpt_v2_agent -> reasoning_message +
  assistant_message; enable_sleeptime=True -> a send_message tool_call_message + its tool return
  (stop_reason "tool_rule"), then a background sleeptime agent run.
- several user messages in one call -> one model request that has them all, one reply.
- the model answering nothing: letta_v1 agents (also with sleeptime) reply nothing; memgpt_v2 agents
  raise InternalServerError ("No tool calls found").
- model HTTP errors: Letta's OpenAI client retries twice (3 model requests), then letta_v1 agents
  give RateLimitError for 429 and InternalServerError for 5xx; memgpt_v2 agents give
  InternalServerError for both. One transient error is retried away.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import letta_client
import pytest

from tests.support.letta_server import (
    AGENT_KINDS,
    EMBEDDING_HANDLE,
    MODEL_HANDLE,
    LettaServer,
    ensure_installed,
    reply_texts,
)
from tests.support.postgres import _venv_site_packages, start_new_cluster
from tests.support.scripted_model import ScriptedModel

SEND_MESSAGE_TOOL = {"type": "function", "function": {"name": "send_message", "parameters": {
    "type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}}}


def chat(model: ScriptedModel, text: str, **extra) -> httpx.Response:
    body = {"model": "scripted", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": text}], **extra}
    return httpx.post(f"{model.base_url}/chat/completions", json=body, timeout=10, trust_env=False)


# ----------------------------------------------------------------------------------------------
# The scripted model on its own (fast)
# ----------------------------------------------------------------------------------------------


@pytest.mark.process
def test_model_runs_as_a_module_and_stops_by_pid():
    model = ScriptedModel.start()
    try:
        assert model.url.startswith("http://127.0.0.1:")
        listed = httpx.get(f"{model.base_url}/models", trust_env=False).json()
        assert [m["id"] for m in listed["data"]] == ["scripted"]
    finally:
        model.stop()
    assert model.process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{model.base_url}/models", trust_env=False, timeout=2)


def test_model_answers_with_send_message_or_text_by_the_last_user_message(scripted_model: ScriptedModel):
    call = chat(scripted_model, "hi there", tools=[SEND_MESSAGE_TOOL]).json()["choices"][0]
    assert call["finish_reason"] == "tool_calls"
    function = call["message"]["tool_calls"][0]["function"]
    assert function["name"] == "send_message" and json.loads(function["arguments"]) == {"message": "echo: hi there"}

    text = chat(scripted_model, "plain please").json()["choices"][0]["message"]
    assert text == {"role": "assistant", "content": "echo: plain please"}
    assert chat(scripted_model, "x [[reply:exactly this]]").json()["choices"][0]["message"]["content"] == "exactly this"
    silent = chat(scripted_model, "hush [[silent]]", tools=[SEND_MESSAGE_TOOL]).json()["choices"][0]["message"]
    assert silent["content"] == "" and "tool_calls" not in silent


def test_model_error_sleep_and_scripted_rule_directives(scripted_model: ScriptedModel):
    assert chat(scripted_model, "a [[status:503*1]]").status_code == 503
    assert chat(scripted_model, "a [[status:503*1]]").status_code == 200  # only the first one failed
    assert chat(scripted_model, "b [[status:429]]").status_code == 429
    assert chat(scripted_model, "b [[status:429]]").status_code == 429
    started = time.monotonic()
    assert chat(scripted_model, "c [[sleep:0.5]]").json()["choices"][0]["message"]["content"] == "echo: c"
    assert time.monotonic() - started >= 0.5

    scripted_model.script({"match": "rule-target", "reply": "from a rule", "times": 1})
    assert chat(scripted_model, "rule-target").json()["choices"][0]["message"]["content"] == "from a rule"
    assert chat(scripted_model, "rule-target").json()["choices"][0]["message"]["content"] == "echo: rule-target"


def test_model_streams_tool_calls_and_text(scripted_model: ScriptedModel):
    def events(text: str, **extra) -> list[dict]:
        body = {"model": "scripted", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": text}], **extra}
        with httpx.stream("POST", f"{scripted_model.base_url}/chat/completions", json=body, trust_env=False) as r:
            lines = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        return [json.loads(line) for line in lines[:-1]]

    chunks = events("streamed words")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "echo: streamed words"
    assert chunks[-1]["usage"]["total_tokens"] > 0
    arguments = "".join(
        call["function"].get("arguments", "")
        for c in events("via tool", tools=[SEND_MESSAGE_TOOL]) if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    )
    assert json.loads(arguments) == {"message": "echo: via tool"}


def test_model_embeddings_are_deterministic(scripted_model: ScriptedModel):
    def embed(texts: list[str], **extra) -> list[list[float]]:
        body = {"model": "text-embedding-3-small", "input": texts, **extra}
        data = httpx.post(f"{scripted_model.base_url}/embeddings", json=body, trust_env=False).json()["data"]
        return [item["embedding"] for item in data]

    first, second = embed(["alpha", "beta"])
    assert len(first) == 1536 and first != second
    assert embed(["alpha"]) == [first]
    assert abs(sum(v * v for v in first) - 1.0) < 1e-9
    assert len(embed(["alpha"], dimensions=8)[0]) == 8


@pytest.mark.process
def test_model_is_a_proxy_trap_that_refuses_and_logs():
    model = ScriptedModel.start()  # its own: the session model's trap log belongs to the Letta server
    try:
        with pytest.raises(httpx.ProxyError):  # the CONNECT goes to 127.0.0.1 only, and is refused
            httpx.get("https://blocked.invalid/x", proxy=model.proxy_url, timeout=5)
        assert [e["path"] for e in model.outbound()] == ["blocked.invalid:443"]
    finally:
        model.stop()


# ----------------------------------------------------------------------------------------------
# PostgreSQL from pgserver's wheel
# ----------------------------------------------------------------------------------------------


@pytest.mark.process
def test_postgresql_starts_from_a_checkout_other_users_cannot_enter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A clone under a `mktemp -d` folder (mode 0700): PostgreSQL's own user cannot reach the venv, so the harness
    runs a copy of pgserver's tree, whose binaries must still find the libraries they link (libpq, ...)."""
    if os.geteuid() != 0:
        pytest.skip("PostgreSQL runs as ourselves when we are not root: no other user has to reach the checkout")
    site = _venv_site_packages(ensure_installed())
    scratch = Path(tempfile.mkdtemp(prefix="blipflow-test-pg-"))  # the harness's /tmp, for this test alone
    scratch.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    unreachable = Path(tempfile.mkdtemp(prefix="clone-"))
    assert unreachable.stat().st_mode & 0o777 == 0o700
    venv = unreachable / "repo" / "tests" / "peers" / "letta" / ".venv"
    checkout_site = venv / "lib" / site.parent.name / "site-packages"
    shutil.copytree(site / "pgserver" / "pginstall", checkout_site / "pgserver" / "pginstall", symlinks=True)
    shutil.copytree(site / "pgserver.libs", checkout_site / "pgserver.libs", symlinks=True)
    pg = None
    try:
        pg = start_new_cluster(venv, tmp_path)
        postgres = Path(pg.process.args[0])
        assert not postgres.is_relative_to(unreachable)
        answer = subprocess.run([str(postgres.parent / "psql"), "-X", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "letta",
                                 "-d", "postgres", "-tAc", "SELECT current_user"], capture_output=True, text=True, timeout=30)
        assert answer.stdout.strip() == "letta", answer.stderr
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# A real Letta server
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(letta_server: LettaServer) -> letta_client.Letta:
    return letta_server.client(timeout=60, max_retries=0)


def send(client: letta_client.Letta, agent_id: str, *texts: str, **extra):
    return client.agents.messages.create(agent_id, messages=[{"role": "user", "content": t} for t in texts], **extra)


def main_requests(letta_server: LettaServer, since: int) -> list[dict]:
    """The model requests since `since`, less those of background sleeptime agents (memory_rethink)."""
    return [e for e in letta_server.model.chat_requests(since=since) if "memory_rethink" not in e["tools"]]


def test_letta_lists_the_scripted_model_and_embedding(client: letta_client.Letta):
    assert MODEL_HANDLE in {m.handle for m in client.models.list()}
    assert EMBEDDING_HANDLE in {m.handle for m in client.models.embeddings.list()}


EXPECTED_SHAPES = {
    "letta_v1_agent": (["assistant_message"], "end_turn"),
    "memgpt_v2_agent": (["reasoning_message", "assistant_message"], "end_turn"),
    "sleeptime": (["tool_call_message", "tool_return_message"], "tool_rule"),
}


@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_each_agent_kind_replies_through_the_scripted_model(letta_server: LettaServer, client, kind):
    agent_id = letta_server.create_agent(kind, name=f"reply-{kind}")
    seq = letta_server.model.last_seq()
    response = send(client, agent_id, f"hello {kind}")
    types, stop = EXPECTED_SHAPES[kind]
    assert [m.message_type for m in response.messages] == types
    assert response.stop_reason.stop_reason == stop
    assert reply_texts(response.messages) == [f"echo: hello {kind}"]
    assert main_requests(letta_server, seq)[0]["user_texts"][-1] == f"hello {kind}"


@pytest.mark.parametrize("kind", AGENT_KINDS)
def test_several_user_messages_in_one_call_get_one_reply_that_saw_them_all(letta_server: LettaServer, client, kind):
    agent_id = letta_server.create_agent(kind, name=f"batch-{kind}")
    seq = letta_server.model.last_seq()
    response = send(client, agent_id, "first post", "second post", "third post")
    assert reply_texts(response.messages) == ["echo: third post"]
    asked = main_requests(letta_server, seq)
    assert len(asked) == 1
    assert asked[0]["user_texts"][-3:] == ["first post", "second post", "third post"]


@pytest.mark.parametrize("kind", ["letta_v1_agent", "sleeptime"])
def test_a_silent_model_gives_no_reply(letta_server: LettaServer, client, kind):
    agent_id = letta_server.create_agent(kind, name=f"silent-{kind}")
    response = send(client, agent_id, "nothing to say [[silent]]")
    assert reply_texts(response.messages) == []
    assert response.stop_reason.stop_reason == "end_turn"


def test_a_silent_model_is_an_error_for_memgpt_v2_agents(letta_server: LettaServer, client):
    agent_id = letta_server.create_agent("memgpt_v2_agent", name="silent-memgpt")
    with pytest.raises(letta_client.InternalServerError, match="No tool calls found"):
        send(client, agent_id, "nothing to say [[silent]]")


@pytest.mark.parametrize("kind, status, error", [
    ("letta_v1_agent", 500, letta_client.InternalServerError),
    ("letta_v1_agent", 429, letta_client.RateLimitError),
    ("sleeptime", 429, letta_client.RateLimitError),
    ("memgpt_v2_agent", 500, letta_client.InternalServerError),
    ("memgpt_v2_agent", 429, letta_client.InternalServerError),  # memgpt_v2 loses the 429
])
def test_model_errors_reach_the_client_after_letta_retries(letta_server: LettaServer, client, kind, status, error):
    agent_id = letta_server.create_agent(kind, name=f"error-{kind}-{status}")
    seq = letta_server.model.last_seq()
    with pytest.raises(error) as raised:
        send(client, agent_id, f"fail [[status:{status}]]")
    assert raised.value.status_code == (status if error is letta_client.RateLimitError else 500)
    attempts = [e for e in main_requests(letta_server, seq) if e["answer"]["kind"] == "error"]
    assert len(attempts) == 3  # the OpenAI SDK inside Letta: 1 try + 2 retries


def test_one_transient_model_error_is_retried_away(letta_server: LettaServer, client):
    agent_id = letta_server.create_agent("letta_v1_agent", name="transient")
    seq = letta_server.model.last_seq()
    assert reply_texts(send(client, agent_id, "flaky [[status:503*1]]").messages) == ["echo: flaky"]
    assert [e["answer"]["kind"] for e in main_requests(letta_server, seq)] == ["error", "text"]


def test_a_slow_model_delays_the_reply_and_can_time_the_client_out(letta_server: LettaServer, client):
    agent_id = letta_server.create_agent("letta_v1_agent", name="slow")
    started = time.monotonic()
    assert reply_texts(send(client, agent_id, "take your time [[sleep:1]]").messages) == ["echo: take your time"]
    assert time.monotonic() - started >= 1.0
    impatient = letta_server.client(timeout=0.5, max_retries=0)
    with pytest.raises(letta_client.APITimeoutError):
        send(impatient, agent_id, "too slow [[sleep:2]]")


def test_an_unknown_agent_is_not_found(client):
    with pytest.raises(letta_client.NotFoundError):
        send(client, "agent-00000000-0000-4000-8000-000000000000", "anyone there?")


def test_streamed_tokens_reassemble_into_the_reply(letta_server: LettaServer, client):
    agent_id = letta_server.create_agent("letta_v1_agent", name="stream")
    seq = letta_server.model.last_seq()
    stream = client.agents.messages.create(agent_id, messages=[{"role": "user", "content": "stream this"}],
                                           streaming=True, stream_tokens=True)
    text = "".join(event.content for event in stream if getattr(event, "message_type", None) == "assistant_message")
    assert text == "echo: stream this"
    assert [e["stream"] for e in main_requests(letta_server, seq)] == [True]


def test_blocks_and_tags(letta_server: LettaServer, client):
    first = letta_server.create_agent("letta_v1_agent", name="tagged-1", tags=["harness-tag", "a"])
    second = letta_server.create_agent("sleeptime", name="tagged-2", tags=["harness-tag", "b"])
    block = client.blocks.create(label="shared_notes", value="v1")
    for agent_id in (first, second):
        client.agents.blocks.attach(block.id, agent_id=agent_id)
    client.blocks.update(block.id, value="v2")
    assert client.agents.blocks.retrieve("shared_notes", agent_id=first).value == "v2"
    assert {a.id for a in client.agents.list(tags=["harness-tag"])} == {first, second}
    assert [a.id for a in client.agents.list(tags=["harness-tag", "b"], match_all_tags=True)] == [second]


def test_nothing_tried_to_leave_the_machine_but_nltks_index(letta_server: LettaServer):
    # Letta's startup calls nltk.download("punkt_tab"); the proxy trap refuses it (Letta goes on).
    assert {e["path"] for e in letta_server.model.outbound()} <= {"raw.githubusercontent.com:443"}
