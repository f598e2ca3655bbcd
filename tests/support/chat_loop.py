"""The whole conversation loop as real `blipflow` processes — ingest (`run`), `dispatch` and
`publish-replies` — on one store and config, against the local PDS, the Jetstream stand-in, a real
Letta server and a Prefect server. Each process is stopped by its PID.

    loop = ChatLoop(folder, network, jetstream_url, letta_url, prefect_env, agents=[...]).start()
    loop.kill("publish"); loop.start("publish")      # a new publish process on the same store
    loop.stop()

A test module gets the `make_loop` fixture (loops stopped after the test) by naming this module a plugin
(tests/conftest.py does).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from blipflow.config import load_settings
from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.store.history import Store
from tests.support.agent_accounts import AgentAccount
from tests.support.fed_stores import control_rows
from tests.support.ingest_process import BlipflowProcess, wait_for, write_config
from tests.support.network import list_records

SETTLE_SECONDS = 4.0  # after the expected records: long enough for one more round trip, were one coming


@pytest.fixture
def make_loop(tmp_path, atproto_network, jetstream, letta_server, prefect_server):
    loops: list[ChatLoop] = []

    def make(*agents: dict, **sections: dict) -> ChatLoop:
        loop = ChatLoop(tmp_path, atproto_network, jetstream.url, letta_server.base_url, prefect_server.env(),
                        list(agents), **sections)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.stop()


def records(account: AgentAccount) -> list:
    return list_records(account.account)


def settled_count(account: AgentAccount, expected: int, timeout: float = 90.0) -> int:
    """The number of the account's blips once it has reached `expected` and stayed there a while."""
    wait_for(lambda: len(records(account)) >= expected, timeout, f"{expected} blips of {account.handle}", 0.3)
    time.sleep(SETTLE_SECONDS)
    return len(records(account))


def no_secrets_in(loop: ChatLoop, *accounts: AgentAccount) -> None:
    logs = loop.logs()
    for account in accounts:
        assert account.app_password not in logs
    assert "eyJ" not in logs  # no JWT (access or refresh token)
    assert "Traceback" not in logs


COMMANDS = {"ingest": ["run"], "dispatch": ["dispatch"], "publish": ["publish-replies"]}
SECRET_ENV = ("BLUESKY_USERNAME", "BLUESKY_PASSWORD", "PDS_URI", "LETTA_API_KEY", "LETTA_BASE_URL", "LETTA_AGENT_ID",
              "JETSTREAM_INSTANCE")


class ChatLoop:
    def __init__(self, folder: Path, network: Any, jetstream_url: str, letta_url: str, prefect_env: dict[str, str],
                 agents: list[dict], **sections: dict) -> None:
        self.folder = folder
        self.store_path = folder / "blipflow.duckdb"
        self.config = write_config(
            folder / "config.yaml", network=network, jetstream_url=jetstream_url, store_path=self.store_path,
            letta={"base_url": letta_url, "timeout": 30}, **sections)
        self.config.write_text(self.config.read_text() + yaml.safe_dump({"agents": agents}))
        self.env = {k: v for k, v in prefect_env.items() if k not in SECRET_ENV and not k.startswith("BLIPFLOW_")}
        self.processes: dict[str, BlipflowProcess] = {}
        self.starts: dict[str, int] = {}
        self.store = Store(self.store_path)
        self.plane = ControlPlane.from_settings(load_settings(self.config))  # the ledger and the outbox

    def rows(self, sql: str, **params: Any) -> list[tuple]:
        """The rows of a query on the control plane (the ledger and the outbox)."""
        return control_rows(self.plane, sql, **params)

    def start(self, *names: str) -> ChatLoop:
        for name in names or tuple(COMMANDS):
            self.starts[name] = self.starts.get(name, 0) + 1
            log = self.folder / f"{name}-{self.starts[name]}.log"
            self.processes[name] = BlipflowProcess(self.config, COMMANDS[name], self.env, log)
        if "ingest" in (names or COMMANDS):
            self.processes["ingest"].wait_for_log("ingest connected to")
        return self

    def reply_states(self) -> list[str]:
        """The state of each reply in the outbox, oldest first."""
        with self.plane.reading() as session:
            return list(session.scalars(select(tables.Reply.state).order_by(tables.Reply.created_at)))

    def posts(self) -> int:
        """How many blips the outbox notes as posted."""
        with self.plane.reading() as session:
            return len(session.scalars(select(tables.Post.uri)).all())

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.signal(signal.SIGKILL)
        process.wait(10)

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        """Ctrl-C to each (they finish what they hold), then by force whatever is left."""
        for process in self.processes.values():
            if process.process.poll() is None:
                process.signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.process.wait(30)
            except Exception:  # noqa: BLE001 - stopped by force below
                pass
            process.stop()
        self.plane.dispose()
