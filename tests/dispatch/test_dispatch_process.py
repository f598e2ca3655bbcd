"""`blipflow dispatch` as a real process under a real Prefect server, killed in the middle of a window."""

from __future__ import annotations

import signal
import subprocess
import sys

import yaml

from blipflow.control.engine import ControlPlane
from blipflow.store.history import Store
from tests.dispatch.test_dispatcher import HUMAN, post
from tests.support.blip_text import content_of
from tests.support.fed_stores import FedStores
from tests.support.ingest_process import PROJECT_ROOT, BlipflowProcess, wait_for


def test_killing_dispatch_mid_window_delivers_each_blip_exactly_once(tmp_path, letta_server, prefect_server):
    agent_id = letta_server.create_agent("letta_v1_agent")
    store_path = tmp_path / "s.duckdb"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(store_path)},
        "letta": {"base_url": letta_server.base_url, "timeout": 10},
        "bluesky": {"plc_uri": "http://127.0.0.1:9"},
        "agents": [{"name": "scout", "agent_id": agent_id}],
    }))
    store = FedStores(Store(store_path), ControlPlane(f"sqlite:///{tmp_path / 'control.sqlite'}"))
    post(store, HUMAN, "a slow question [[sleep:6]]")
    seq = letta_server.model.last_seq()

    def model_calls() -> list[dict]:
        return [r for r in letta_server.model.chat_requests(since=seq)
                if any("a slow question" in text for text in r["user_texts"])]

    first = BlipflowProcess(config, ["dispatch"], prefect_server.env(), tmp_path / "first.log")
    second = None
    try:
        wait_for(model_calls, 60, "the window to reach the model")
        first.signal(signal.SIGKILL)  # mid-call: Letta goes on answering, nobody records it
        first.wait(10)
        assert store.rows("SELECT state FROM windows") == [("sending",)]
        second = BlipflowProcess(config, ["dispatch"], prefect_server.env(), tmp_path / "second.log")
        wait_for(lambda: store.rows("SELECT state FROM windows") == [("answered",)], 90, "the window answered")
        second.signal(signal.SIGINT)
        assert second.wait(30) == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert len(model_calls()) == 1  # the agent was asked once
    history = letta_server.client().agents.messages.list(agent_id, limit=50)
    assert sum(1 for m in history if m.message_type == "user_message") == 1  # and remembers it once
    [(reply,)] = store.rows("SELECT content FROM replies")
    assert reply.endswith("</content>\n</blip>") and content_of(reply) == "a slow question"
    assert "dispatch stopped after delivering 1 windows" in second.log()


def test_an_agent_account_that_cannot_be_reached_is_one_line(tmp_path, prefect_server):
    from tests.support.prefect_server import free_port

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "s.duckdb")},
        "agents": [{"name": "scout", "agent_id": "agent-1", "handle": "scout.test",
                    "pds_uri": f"http://127.0.0.1:{free_port()}"}],  # no did: learned from the handle, if it can be
    }))
    result = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "dispatch"], cwd=PROJECT_ROOT,
                            env=prefect_server.env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("blipflow: ") and "scout.test" in last
    assert "Traceback" not in result.stderr
