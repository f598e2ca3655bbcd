"""Analytics tells agents from people by their DIDs, learned from their handles at the real local PDS when
the config leaves `did` out (as the README allows and dispatch does)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from blipflow.store.history import Store
from tests.support.agent_accounts import agent_account
from tests.support.ingest_process import PROJECT_ROOT
from tests.test_publish import ingested


def test_an_agent_configured_without_its_did_is_an_agent_in_the_reports(tmp_path, atproto_network, human_account):
    scout = agent_account(atproto_network, "scout")
    store = Store(tmp_path / "s.duckdb")
    question = ingested(store, atproto_network, human_account, "anyone?")
    ingested(store, atproto_network, scout.account, "me", reply={"root": {"uri": question[0], "cid": question[1]},
                                                                 "parent": {"uri": question[0], "cid": question[1]}})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(store.path)},
        "bluesky": {"pds_uri": atproto_network.pds_url, "plc_uri": atproto_network.plc_url},
        "agents": [scout.config("scout", "agent-1")]}))  # no did

    def report(name: str) -> list[dict]:
        result = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "analytics", name,
                                 "--output", "json"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    activity = {row["did"]: row for row in report("activity")}
    assert (activity[scout.did]["author"], activity[scout.did]["agent"]) == ("scout", "scout")
    assert activity[human_account.did]["agent"] is None
    [edge] = report("who-answers-whom")
    assert (edge["source"], edge["source_is_agent"], edge["target_is_agent"]) == ("scout", True, False)
    assert [row["agent"] for row in report("latency")] == ["scout"]
