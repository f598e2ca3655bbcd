"""A scripted, deterministic OpenAI-compatible model server on 127.0.0.1 for tests (stdlib only).

It stands in for the LLM behind a real Letta server; nothing else is faked. Run it with

    python -m tests.support.scripted_model --port 0     # prints: READY {"url": "http://127.0.0.1:N", ...}

or from tests through `ScriptedModel.start()` (a handle that also reads the request log).

Endpoints
    GET  /v1/models             one chat model, `scripted` (Letta lists it as `openai-proxy/scripted`)
    POST /v1/chat/completions   tool calls and plain text, with or without SSE streaming (`stream: true`)
    POST /v1/embeddings         deterministic unit vectors (sha256-seeded), `dimensions` or 1536 wide
    GET  /_requests             {"requests": [...]} everything received, oldest first (`?since=SEQ`)
    POST /_reset                clear the request log, the scripted rules and the directive counters
    POST /_script               {"rules": [RULE, ...]} append rules (see below)
    GET  /_health               {"ok": true}

It is also an HTTP(S) proxy trap: a process whose HTTP(S)_PROXY points here has every outbound
request refused (CONNECT or absolute-URI requests get 403) and logged with kind "outbound", so tests
can see (and assert on) anything that tried to leave the machine.

How a chat completion is answered (all from the LAST user message of the request)
    text   = that message's text; Letta's JSON-packed user messages ({"message": ...}) are unpacked
    reply  = "echo: " + text with all directives removed (whitespace-trimmed)
    if the request offers a `send_message` tool      -> a `send_message` tool call {"message": reply}
    elif tool_choice forces a function               -> a call of that function
    elif it offers a sleeptime "finish" memory tool  -> a call of that tool (ends a sleeptime run)
    else                                              -> plain assistant text `reply`
Directives anywhere in the last user message:
    [[silent]]            no reply: plain empty content, no tool call
    [[reply:TEXT]]        reply with exactly TEXT (no "echo: ")
    [[status:CODE]]       answer HTTP CODE (e.g. 500, 429, 503) with an OpenAI-style error body;
    [[status:CODE*N]]     ... only for the first N requests whose last user message carries it
    [[sleep:SECONDS]]     wait that long before answering (also before an error status)
Scripted rules (POST /_script) are checked first, in order; a rule applies when its `match`
(substring of the last user message text; omitted = any) is found and it has `times` left
(default 1; null = unlimited). Its fields: reply, silent, status, sleep, tool (name) + arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL_NAME = "scripted"
EMBEDDING_DIM = 1536
SEND_MESSAGE = "send_message"
# Tools that end a sleeptime agent's memory-editing run (names across Letta versions).
FINISH_TOOLS = ("memory_finish_edits", "finish_rethinking_memory")
INNER_THOUGHTS_KEYS = ("thinking", "inner_thoughts")
DIRECTIVE = re.compile(r"\[\[(silent|silence|reply|status|sleep)(?::([^\]]*))?\]\]", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Deciding what to answer
# --------------------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """The text of an OpenAI message `content` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return str(content)


def unpack_letta_text(text: str) -> str:
    """Letta may pack a user message as JSON ({"type": "user_message", "message": ...}): unpack it."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            packed = json.loads(stripped)
        except ValueError:
            return text
        if isinstance(packed, dict) and isinstance(packed.get("message"), str):
            return packed["message"]
    return text


def user_texts(body: dict) -> list[str]:
    """Texts of all user messages of a chat request, unpacked, oldest first."""
    return [
        unpack_letta_text(content_text(message.get("content")))
        for message in body.get("messages") or []
        if isinstance(message, dict) and message.get("role") == "user"
    ]


def tool_names(body: dict) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            names.append(function["name"])
        elif isinstance(tool, dict) and tool.get("name"):  # Responses-style tool
            names.append(tool["name"])
    return names


def tool_parameters(body: dict, name: str) -> dict:
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            return function.get("parameters") or {}
    return {}


def forced_tool(body: dict) -> str | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and function.get("name"):
            return function["name"]
        if choice.get("name"):
            return choice["name"]
    return None


@dataclass
class Plan:
    """What one chat completion answers."""

    kind: str  # "tool" | "text" | "error"
    text: str = ""
    tool: str | None = None
    arguments: dict | None = None
    status: int = 200
    sleep: float = 0.0

    def summary(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "tool":
            out.update(tool=self.tool, arguments=self.arguments)
        elif self.kind == "text":
            out["text"] = self.text
        else:
            out["status"] = self.status
        if self.sleep:
            out["sleep"] = self.sleep
        return out


class Brain:
    """The scripted behaviour and its state (rules and directive counters), thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict] = []
        self.status_counts: dict[str, int] = {}

    def reset(self) -> None:
        with self.lock:
            self.rules.clear()
            self.status_counts.clear()

    def add_rules(self, rules: list[dict]) -> None:
        with self.lock:
            for rule in rules:
                rule = dict(rule)
                rule.setdefault("times", 1)
                self.rules.append(rule)

    def _take_rule(self, text: str) -> dict | None:
        with self.lock:
            for rule in self.rules:
                if rule.get("match") is not None and rule["match"] not in text:
                    continue
                if rule["times"] is not None:
                    if rule["times"] <= 0:
                        continue
                    rule["times"] -= 1
                return rule
        return None

    def _status_due(self, key: str, limit: int | None) -> bool:
        with self.lock:
            seen = self.status_counts.get(key, 0)
            self.status_counts[key] = seen + 1
            return limit is None or seen < limit

    def plan(self, body: dict) -> Plan:
        texts = user_texts(body)
        raw = texts[-1] if texts else ""
        rule = self._take_rule(raw)
        silent, reply, status, sleep = False, None, None, 0.0
        tool, arguments = None, None
        if rule is not None:
            silent = bool(rule.get("silent"))
            reply = rule.get("reply")
            status = rule.get("status")
            sleep = float(rule.get("sleep") or 0)
            tool, arguments = rule.get("tool"), rule.get("arguments")
        else:
            for match in DIRECTIVE.finditer(raw):
                name, value = match.group(1).lower(), (match.group(2) or "").strip()
                if name in ("silent", "silence"):
                    silent = True
                elif name == "reply":
                    reply = value
                elif name == "sleep":
                    sleep = float(value or 0)
                elif name == "status":
                    code, _, count = value.partition("*")
                    if self._status_due(f"{raw}\0{match.group(0)}", int(count) if count else None):
                        status = int(code)
        if reply is None:
            reply = "echo: " + DIRECTIVE.sub("", raw).strip()
        if status and int(status) >= 400:
            return Plan("error", status=int(status), sleep=sleep)
        if silent:
            return Plan("text", text="", sleep=sleep)

        offered = tool_names(body)
        if tool is None:
            if SEND_MESSAGE in offered:
                tool = SEND_MESSAGE
            elif forced_tool(body):
                tool = forced_tool(body)
            else:
                tool = next((name for name in FINISH_TOOLS if name in offered), None)
        if tool is None:
            return Plan("text", text=reply, sleep=sleep)
        if arguments is None:
            arguments = {"message": reply} if tool == SEND_MESSAGE else {}
        arguments = dict(arguments)
        properties = tool_parameters(body, tool).get("properties") or {}
        for key in INNER_THOUGHTS_KEYS:
            if key in properties and key not in arguments:
                arguments[key] = f"scripted model: calling {tool}"
        if "request_heartbeat" in properties and "request_heartbeat" not in arguments:
            arguments["request_heartbeat"] = False
        return Plan("tool", text=reply, tool=tool, arguments=arguments, sleep=sleep)


def embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for `text` (sha256 counter-mode stream mapped to [-1, 1])."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((word / 2**31) - 1.0 for word in struct.unpack("<8I", digest))
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def rough_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


# --------------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------------


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.brain = Brain()
        self.log_lock = threading.Lock()
        self.log: list[dict] = []
        self.seq = 0
        self.ids = 0

    def record(self, entry: dict) -> dict:
        with self.log_lock:
            self.seq += 1
            entry = {"seq": self.seq, "time": time.time(), **entry}
            self.log.append(entry)
            return entry

    def next_id(self) -> int:
        with self.log_lock:
            self.ids += 1
            return self.ids


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---- plumbing ----

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            return {"_raw": raw.decode("utf-8", "replace")}

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _outbound(self) -> bool:
        """Proxy trap: refuse and log requests meant for another host."""
        if self.command == "CONNECT" or not self.path.startswith("/"):
            self.server.record({"kind": "outbound", "method": self.command, "path": self.path})
            self.close_connection = True
            self._send_json(403, {"error": {"message": "outbound traffic refused by the test harness"}})
            return True
        return False

    def do_CONNECT(self) -> None:
        self._outbound()

    def do_GET(self) -> None:
        if self._outbound():
            return
        path, _, query = self.path.partition("?")
        if path.rstrip("/") in ("/v1/models", "/models"):
            self.server.record({"kind": "models", "method": "GET", "path": path})
            self._send_json(200, {"object": "list", "data": [
                {"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "blipflow-tests"},
            ]})
        elif path == "/_requests":
            since = 0
            for pair in query.split("&"):
                key, _, value = pair.partition("=")
                if key == "since" and value.isdigit():
                    since = int(value)
            with self.server.log_lock:
                entries = [entry for entry in self.server.log if entry["seq"] > since]
            self._send_json(200, {"requests": entries})
        elif path == "/_health":
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": {"message": f"no route GET {path}"}})

    def do_POST(self) -> None:
        if self._outbound():
            return
        path = self.path.partition("?")[0].rstrip("/")
        body = self._body()
        if path in ("/v1/chat/completions", "/chat/completions"):
            self._chat(body)
        elif path in ("/v1/embeddings", "/embeddings"):
            self._embeddings(body)
        elif path == "/_reset":
            with self.server.log_lock:
                self.server.log.clear()
            self.server.brain.reset()
            self._send_json(200, {"ok": True})
        elif path == "/_script":
            rules = body.get("rules") if isinstance(body, dict) else None
            if not isinstance(rules, list):
                self._send_json(400, {"error": {"message": "expected {\"rules\": [...]}"}})
                return
            self.server.brain.add_rules(rules)
            self._send_json(200, {"ok": True})
        else:
            self.server.record({"kind": "unknown", "method": "POST", "path": path, "body": body})
            self._send_json(404, {"error": {"message": f"no route POST {path}"}})

    def do_DELETE(self) -> None:
        self._outbound() or self._send_json(404, {"error": {"message": "no route"}})

    do_PUT = do_PATCH = do_HEAD = do_DELETE

    # ---- endpoints ----

    def _embeddings(self, body: dict) -> None:
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        dim = int(body.get("dimensions") or EMBEDDING_DIM)
        texts = [item if isinstance(item, str) else json.dumps(item) for item in inputs]
        self.server.record({"kind": "embeddings", "method": "POST", "path": self.path, "body": body})
        self._send_json(200, {
            "object": "list",
            "model": body.get("model", "text-embedding-3-small"),
            "data": [{"object": "embedding", "index": i, "embedding": embedding(text, dim)} for i, text in enumerate(texts)],
            "usage": {"prompt_tokens": sum(rough_tokens(t) for t in texts), "total_tokens": sum(rough_tokens(t) for t in texts)},
        })

    def _chat(self, body: dict) -> None:
        plan = self.server.brain.plan(body)
        self.server.record({
            "kind": "chat", "method": "POST", "path": self.path, "body": body,
            "user_texts": user_texts(body), "tools": tool_names(body), "stream": bool(body.get("stream")),
            "answer": plan.summary(),
        })
        if plan.sleep:
            time.sleep(plan.sleep)
        if plan.kind == "error":
            kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(plan.status, "server_error")
            self.close_connection = True
            self._send_json(
                plan.status,
                {"error": {"message": f"scripted model: status {plan.status}", "type": kind, "code": kind, "param": None}},
                # Keep client retries (openai SDK: 2 by default) quick.
                headers={"retry-after-ms": "10", "retry-after": "0"},
            )
            return
        n = self.server.next_id()
        completion_id, created, model = f"chatcmpl-scripted-{n}", int(time.time()), body.get("model", MODEL_NAME)
        usage = {"prompt_tokens": rough_tokens(body.get("messages")), "completion_tokens": rough_tokens(plan.summary())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        tool_call = None
        if plan.kind == "tool":
            tool_call = {"id": f"call_scripted_{n}", "type": "function",
                         "function": {"name": plan.tool, "arguments": json.dumps(plan.arguments)}}
        if body.get("stream"):
            self._stream(completion_id, created, model, plan, tool_call, usage, body)
            return
        message: dict[str, Any] = {"role": "assistant", "content": plan.text if plan.kind == "text" else None}
        if tool_call:
            message["tool_calls"] = [tool_call]
        self._send_json(200, {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool_call else "stop"}],
            "usage": usage,
        })

    def _stream(self, completion_id: str, created: int, model: str, plan: Plan, tool_call: dict | None,
                usage: dict, body: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict, finish: str | None = None) -> None:
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        if tool_call:
            arguments = tool_call["function"]["arguments"]
            chunk({"tool_calls": [{"index": 0, "id": tool_call["id"], "type": "function",
                                   "function": {"name": tool_call["function"]["name"], "arguments": ""}}]})
            step = max(1, len(arguments) // 3)
            for start in range(0, len(arguments), step):
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + step]}}]})
            chunk({}, "tool_calls")
        else:
            words = re.findall(r"\S+\s*|\s+", plan.text)
            for word in words:
                chunk({"content": word})
            chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage}
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def serve(host: str, port: int) -> None:
    server = ModelServer((host, port))
    url = f"http://{host}:{server.server_address[1]}"
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print("READY " + json.dumps({"url": url, "base_url": url + "/v1", "model": MODEL_NAME, "pid": os.getpid()}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# --------------------------------------------------------------------------------------------
# Process helpers (shared with tests/support/letta_server.py)
# --------------------------------------------------------------------------------------------

_WATCHDOG = r"""
import os, shutil, signal, sys, time
parent, pgid, first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cleanup = sys.argv[4] if len(sys.argv) > 4 else ""
def alive_group():
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while True:
    if not alive_group():
        sys.exit(0)
    if os.getppid() != parent:
        break
    time.sleep(0.5)
try:
    os.killpg(pgid, first)
except ProcessLookupError:
    sys.exit(0)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and alive_group():
    time.sleep(0.2)
try:
    os.killpg(pgid, signal.SIGKILL)
except ProcessLookupError:
    pass
if cleanup:
    time.sleep(0.5)
    shutil.rmtree(cleanup, ignore_errors=True)
"""


def start_watchdog(pgid: int, first_signal: int = signal.SIGTERM, cleanup: Path | None = None) -> subprocess.Popen:
    """A tiny process that kills process group `pgid` if this (the test) process dies first, and
    then removes the directory `cleanup` (if given).

    It exits by itself once the group is gone, so a normal stop needs nothing more.
    """
    extra = [str(cleanup)] if cleanup else []
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(pgid), str(int(first_signal)), *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def stop_group(process: subprocess.Popen, first_signal: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Stop a process started with start_new_session=True, and its whole process group, by PID."""
    pgid = process.pid
    if process.poll() is None:
        try:
            os.killpg(pgid, first_signal)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # leftovers in the group (children), then the leader if still there
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(5)


def reap(process: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if process is not None and process.poll() is None:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(2)


# --------------------------------------------------------------------------------------------
# Handle for tests
# --------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]


class ScriptedModel:
    """A running scripted model server (a subprocess of this test process)."""

    def __init__(self, process: subprocess.Popen, url: str, watchdog: subprocess.Popen | None) -> None:
        self.process = process
        self.url = url
        self.base_url = url + "/v1"
        self.model = MODEL_NAME
        self.watchdog = watchdog

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def proxy_url(self) -> str:
        """Point HTTP(S)_PROXY here to refuse and log any outbound request."""
        return self.url

    @classmethod
    def start(cls, *, python: str = sys.executable, timeout: float = 20.0, stderr_path: Path | None = None) -> ScriptedModel:
        with open(stderr_path or os.devnull, "wb") as err:
            process = subprocess.Popen(
                [python, "-m", "tests.support.scripted_model", "--port", "0"],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, text=True,
            )
        watchdog = start_watchdog(process.pid)
        deadline = time.monotonic() + timeout
        result: dict[str, str] = {}

        def read_ready() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("READY "):
                    result.update(json.loads(line[len("READY "):]))
                    return

        reader = threading.Thread(target=read_ready, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if "url" not in result:
            stop_group(process, grace=2)
            reap(watchdog)
            raise RuntimeError(f"scripted model did not start within {timeout} s (exit code {process.poll()})")
        return cls(process, result["url"], watchdog)

    # ---- talking to it ----

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        with opener.open(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def requests(self, kind: str | None = None, since: int = 0) -> list[dict]:
        """The request log (oldest first); kind: "chat", "embeddings", "models", "outbound", ..."""
        entries = self._call("GET", f"/_requests?since={since}")["requests"]
        return [entry for entry in entries if kind is None or entry["kind"] == kind]

    def chat_requests(self, since: int = 0) -> list[dict]:
        return self.requests("chat", since)

    def outbound(self, since: int = 0) -> list[dict]:
        """Requests that tried to leave the machine through the proxy trap."""
        return self.requests("outbound", since)

    def last_seq(self) -> int:
        entries = self.requests()
        return entries[-1]["seq"] if entries else 0

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def script(self, *rules: dict) -> None:
        """Append scripted rules, e.g. script({"match": "hi", "reply": "hello", "times": 1})."""
        self._call("POST", "/_script", {"rules": list(rules)})

    def stop(self) -> None:
        stop_group(self.process, grace=5)
        if self.process.stdout:
            self.process.stdout.close()
        reap(self.watchdog)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the scripted model binds to loopback only")
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
