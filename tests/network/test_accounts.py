"""Agents without credentials or without a DID that can be known: `blipflow config` says so (one line each,
no secret), and a publish run says it once — checked against the real local PDS."""

from __future__ import annotations

import subprocess
import sys
import time

import yaml

from blipflow.control.engine import ControlPlane
from tests.publish.test_publisher import control_url, ingested, queue, state
from tests.support.agent_accounts import agent_account
from tests.support.ingest_process import PROJECT_ROOT, BlipflowProcess, wait_for
from tests.support.network import list_records


def test_config_warns_about_agents_without_credentials_or_a_did(tmp_path, atproto_network):
    scout = agent_account(atproto_network, "scout")
    pds = atproto_network.pds_url
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "bluesky": {"pds_uri": pds, "plc_uri": atproto_network.plc_url},
        "store": {"path": str(tmp_path / "s.duckdb")},
        "agents": [
            {**scout.config("complete", "agent-1"), "did": scout.did},
            {**scout.config("learned", "agent-2")},  # no did: learned from the handle, nothing to say
            {**scout.config("nopass", "agent-3"), "app_password": None, "did": scout.did},
            {"name": "passonly", "agent_id": "agent-4", "app_password": scout.app_password},
            {**scout.config("ghost", "agent-5"), "handle": "nobody-here.test"},
        ],
    }))
    result = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "config"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"agents"' in result.stdout  # the configuration, as before
    assert result.stderr.splitlines() == [
        f"blipflow: warning: agents.2 (nopass): {scout.handle} has no app password (set its app_password): "
        "its replies will wait in the outbox",
        "blipflow: warning: agents.3 (passonly): app_password without a handle is not used (set its handle too, "
        "or remove it)",
        "blipflow: warning: agents.3 (passonly): no account to publish as (set its handle and app_password, or "
        "bluesky.username and bluesky.password): its replies will wait in the outbox",
        "blipflow: warning: agents.3 (passonly): no did, and no handle to learn it from: dispatch cannot keep its "
        "own blips from it and analytics counts it as a person",
        "blipflow: warning: agents.4 (ghost): no did, and it cannot be learned: account ghost (nobody-here.test): "
        "could not resolve its handle: the PDS answered HTTP 400 HandleNotFound",
    ]
    assert scout.app_password not in result.stdout + result.stderr


def test_a_publish_run_says_once_that_an_agent_has_no_app_password(tmp_path, atproto_network, human_account,
                                                                    prefect_server):
    scout = agent_account(atproto_network, "scout")
    other = agent_account(atproto_network, "other")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "control": {"url": control_url(tmp_path)},
        "bluesky": {"pds_uri": atproto_network.pds_url, "plc_uri": atproto_network.plc_url},
        "agents": [{**scout.config("nopass", "agent-1"), "app_password": None, "did": scout.did},
                   {**other.config("other", "agent-2"), "did": other.did}]}))
    plane = ControlPlane(control_url(tmp_path))
    question = ingested(plane, atproto_network, human_account, "both of you, please")
    [waiting] = queue(plane, "nopass", [question[0]], "never without a password")
    queue(plane, "other", [question[0]], "posted")

    process = BlipflowProcess(config, ["publish-replies"], prefect_server.env(), tmp_path / "publish.log")
    try:
        wait_for(lambda: [r for r in list_records(other.account) if r.value["content"] == "posted"], 60,
                 "the other agent's reply on the PDS")
        time.sleep(2.0)  # a second look at the outbox would find the waiting reply again
    finally:
        process.stop()
    said = [line for line in process.log().splitlines() if scout.handle in line]
    assert len(said) == 1, "\n".join(said)
    assert (f"agent nopass: {scout.handle} has no app password (set its app_password): its replies wait in the outbox"
            in said[0])
    assert state(plane, waiting) == ("queued", None)
