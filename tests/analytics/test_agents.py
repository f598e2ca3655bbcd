"""Analytics tells agents from people by their DIDs, learned from their handles at the real local PDS when
the config leaves `did` out (as the README allows and dispatch does)."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import count

import yaml

from blipflow.store.history import IngestBatch, Store
from tests.support.agent_accounts import agent_account
from tests.support.frames import T0, blips, commit_frame
from tests.support.ingest_process import PROJECT_ROOT

clock = count(1)


def ingested(store: Store, network, author, content: str, **fields) -> tuple[str, str]:
    """A blip posted on the PDS and stored as ingest would store it."""
    uri, cid = network.post_blip(author, content, **fields)
    did, _, rkey = uri.removeprefix("at://").split("/")
    store.apply(IngestBatch(blips=blips(commit_frame(did, rkey, T0 + next(clock), content=content, cid=cid,
                                                     reply=fields.get("reply")))))
    return uri, cid


def test_an_agent_configured_without_its_did_is_an_agent_in_the_reports(tmp_path, atproto_network, human_account):
    scout = agent_account(atproto_network, "scout")
    store = Store(tmp_path / "s.duckdb")
    question = ingested(store, atproto_network, human_account, "anyone?")
    ingested(store, atproto_network, scout.account, "me", reply={"root": {"uri": question[0], "cid": question[1]},
                                                                 "parent": {"uri": question[0], "cid": question[1]}})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(store.path)}, "control": {"url": f"sqlite:///{tmp_path / 'control.sqlite'}"},
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
