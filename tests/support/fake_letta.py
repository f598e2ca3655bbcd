"""A fast in-process fake of the few Letta endpoints dispatch uses, for unit tests and benchmarks.

It answers with the scripted model's own rules (`scripted_model.Brain`: "echo: " + the last user
message, and the same directives), shaped the way the real server shapes its answers — assistant
messages for `letta_v1_agent`, a `send_message` tool call for sleeptime agents, nothing for silence,
a failed model call tried three times before an HTTP error (as Letta's model client does), messages
recorded only once the call is answered. `tests/peers/letta/test_contract.py` runs the same cases against
this fake and the real server, so the two cannot drift apart.

    POST /v1/agents/{id}/messages     LettaResponse
    GET  /v1/agents/{id}/messages     the agent's history, oldest first
    POST /v1/agents/                  a new agent (`agent_type`), as {"id": …}

`python -m tests.support.fake_letta --latency-ms N` serves it in a process of its own, as a real Letta
runs beside dispatch (`FakeLettaProcess`): benchmarks use it so that Letta's own work is not counted
against the dispatcher's interpreter.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.support.scripted_model import SEND_MESSAGE, Brain

MODEL_ATTEMPTS = 3  # Letta's model client tries a failing call this often
AGENT_PATH = re.compile(r"^/v1/agents/([^/]+)/messages/?(?:\?.*)?$")
SEND_MESSAGE_TOOL = {"type": "function", "function": {"name": SEND_MESSAGE, "parameters": {"properties": {}}}}


@dataclass
class FakeAgent:
    kind: str  # letta_v1_agent | sleeptime
    history: list[dict] = field(default_factory=list)


class FakeLetta:
    def __init__(self, latency_ms: float = 0.0) -> None:
        self.latency = latency_ms / 1000
        self.brain = Brain()
        self.agents: dict[str, FakeAgent] = {}
        self.lock = threading.Lock()
        self.calls = 0
        self.connections = 0  # opened by callers, over the fake's life
        self.clock = itertools.count()
        # As many callers connecting at once as a real server takes (uvicorn's backlog is 2048), not
        # socketserver's 5: a hundred lanes calling together would otherwise wait on SYN retries.
        self.server = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 1024})(
            ("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeLetta:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def create_agent(self, kind: str = "letta_v1_agent") -> str:
        agent_id = f"agent-{uuid.uuid4()}"
        self.agents[agent_id] = FakeAgent(kind)
        return agent_id

    def config(self, folder: Path, agents: list[dict], **sections: dict) -> Path:
        """A config.yaml dispatching to this fake, its store in `folder`; no PLC to ask (DIDs stand in)."""
        config = {"store": {"path": str(folder / "s.duckdb")}, "letta": {"base_url": self.base_url, "timeout": 30},
                  "bluesky": {"plc_uri": "http://127.0.0.1:9"}, "agents": agents, **sections}
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    # -- the two endpoints -------------------------------------------------------------------------

    def answer(self, agent_id: str, body: dict) -> tuple[int, Any]:
        agent = self.agents.get(agent_id)
        if agent is None:
            return 404, {"detail": f"Agent not found: {agent_id}"}
        if self.latency:
            time.sleep(self.latency)
        users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
        model_request = {"messages": [{"role": "user", "content": m.get("content", "")} for m in users],
                         "tools": [SEND_MESSAGE_TOOL] if agent.kind == "sleeptime" else []}
        for _ in range(MODEL_ATTEMPTS):
            plan = self.brain.plan(model_request)
            if plan.kind != "error":
                break
        if plan.sleep:
            time.sleep(plan.sleep)
        if plan.kind == "error":
            return plan.status, {"detail": "llm_error"}
        received = [self.message("user_message", content=m.get("content", ""), otid=m.get("otid")) for m in users]
        reply: list[dict] = []
        if plan.kind == "tool" and plan.tool == SEND_MESSAGE:
            reply.append(self.message("tool_call_message", tool_call={
                "name": SEND_MESSAGE, "arguments": json.dumps(plan.arguments), "tool_call_id": str(uuid.uuid4())}))
        elif plan.text:
            reply.append(self.message("assistant_message", content=plan.text))
        with self.lock:
            self.calls += 1
            agent.history += received + reply
        return 200, {"messages": reply,
                     "stop_reason": {"message_type": "stop_reason", "stop_reason": "end_turn"},
                     "usage": {"message_type": "usage_statistics", "step_count": 1}}

    def history(self, agent_id: str, after: str | None) -> tuple[int, Any]:
        agent = self.agents.get(agent_id)
        if agent is None:
            return 404, {"detail": f"Agent not found: {agent_id}"}
        with self.lock:
            ids = [message["id"] for message in agent.history]
            start = ids.index(after) + 1 if after in ids else 0
            return 200, list(agent.history[start:][-100:])

    def message(self, message_type: str, **fields: Any) -> dict:
        stamp = datetime.now(timezone.utc).isoformat()
        return {"id": f"message-{uuid.uuid4()}", "date": stamp, "message_type": message_type,
                "otid": fields.pop("otid", None) or str(uuid.uuid4()), "seq_id": next(self.clock), **fields}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept open between calls, as a real server keeps them
            disable_nagle_algorithm = True  # else the body, written after the headers, waits for their ACK

            def setup(self) -> None:  # once per connection
                super().setup()
                with fake.lock:
                    fake.connections += 1

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.rstrip("/") == "/v1/agents":
                    kind = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                    self.reply(200, {"id": fake.create_agent(kind.get("agent_type") or "letta_v1_agent")})
                    return
                match = AGENT_PATH.match(self.path)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                self.reply(*(fake.answer(match.group(1), body) if match else (404, {"detail": "not found"})))

            def do_GET(self) -> None:  # noqa: N802
                match = AGENT_PATH.match(self.path)
                after = parse_qs(urlsplit(self.path).query).get("after", [None])[0]
                self.reply(*(fake.history(match.group(1), after) if match else (404, {"detail": "not found"})))

            def reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


class FakeLettaProcess:
    """The fake served by a child process of its own, stopped by its PID."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.fake_letta", "--latency-ms", str(latency_ms)],
                                        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the fake Letta process did not start (it said {line!r})")
        self.base_url = line.strip()

    def create_agent(self, kind: str = "letta_v1_agent") -> str:
        request = urllib.request.Request(f"{self.base_url}/v1/agents/", data=json.dumps({"agent_type": kind}).encode(),
                                         headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["id"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the fake Letta on 127.0.0.1 until terminated")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    fake = FakeLetta(latency_ms=parser.parse_args().latency_ms)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(fake.base_url, flush=True)
    fake.server.serve_forever()


if __name__ == "__main__":
    main()
