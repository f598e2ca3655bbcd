"""Credentials as Prefect blocks on a real Prefect server: registered with the documented command, shown
masked by the API, filled into the settings that name them, and never in a flow run's parameters, logs
or artifacts. Every block that cannot be read is one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from blipflow.config import ConfigError, load_settings
from blipflow.control.engine import ControlPlane
from blocks.atproto_account import AtprotoAccount
from blocks.letta_server import LettaServer
from blocks.loading import settings_from
from flows.publish import publish as publish_flow
from tests.publish.test_publisher import control_url, ingested, queue
from tests.support.agent_accounts import AgentAccount, agent_account
from tests.support.ingest_process import PROJECT_ROOT, wait_for
from tests.support.network import list_records
from tests.support.prefect_server import PrefectServer, free_port

CLI = Path(sys.executable).parent / "blipflow"
LETTA_KEY = "letta-key-4f1d9a0c7e"  # only ever in the block
WRONG_PASSWORD = "wrong-pass-wrd-9x7q"
LEGACY_ENV = ("BLUESKY_USERNAME", "BLUESKY_PASSWORD", "PDS_URI", "LETTA_API_KEY", "LETTA_BASE_URL", "LETTA_AGENT_ID")


@contextmanager
def api_of(server: PrefectServer) -> Iterator[None]:
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


@pytest.fixture(scope="module")
def scout(atproto_network) -> AgentAccount:
    return agent_account(atproto_network, "scout")


@pytest.fixture(scope="module")
def saved_blocks(prefect_server: PrefectServer, atproto_network, scout: AgentAccount) -> dict[str, str]:
    """Both block types registered the way deployments/README.md says, and three blocks saved; the secrets."""
    for module in ("blocks/atproto_account.py", "blocks/letta_server.py"):
        done = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-f", module], cwd=PROJECT_ROOT,
                              env=prefect_server.env(), capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    stranger = atproto_network.create_account("stranger")
    with api_of(prefect_server):
        AtprotoAccount(handle=scout.handle, app_password=scout.app_password,
                       pds_url=atproto_network.pds_url).save("scout-account", overwrite=True)
        AtprotoAccount(handle=stranger.handle, app_password=WRONG_PASSWORD,
                       pds_url=atproto_network.pds_url).save("refused-account", overwrite=True)
        LettaServer(base_url="http://127.0.0.1:8283", api_key=LETTA_KEY).save("letta-test", overwrite=True)
    return {"scout": scout.app_password, "refused": WRONG_PASSWORD, "letta": LETTA_KEY}


def write_config(path: Path, atproto_network, **sections) -> Path:
    path.write_text(yaml.safe_dump({"store": {"path": str(path.parent / "s.duckdb")},
                                    "control": {"url": control_url(path.parent)},
                                    "bluesky": {"pds_uri": atproto_network.pds_url, "plc_uri": atproto_network.plc_url},
                                    **sections}))
    return path


def blipflow_config(config: Path, api_url: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name not in LEGACY_ENV}
    env["PREFECT_API_URL"] = api_url
    return subprocess.run([str(CLI), "-c", str(config), "config"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def run_logs(client, run_id) -> list[str]:
    return [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]


def test_the_registered_types_keep_the_secrets_as_secret_fields(prefect_server, saved_blocks) -> None:
    for slug, secret_field in (("atproto-account", "app_password"), ("letta-server", "api_key")):
        block_type = httpx.get(f"{prefect_server.api_url}/block_types/slug/{slug}").json()
        [schema] = httpx.post(f"{prefect_server.api_url}/block_schemas/filter",
                              json={"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}}).json()
        assert schema["fields"]["secret_fields"] == [secret_field]


@pytest.mark.parametrize("slug, name, field, secret", [
    ("atproto-account", "scout-account", "app_password", "scout"),
    ("letta-server", "letta-test", "api_key", "letta"),
])
def test_the_api_shows_a_saved_secret_masked(prefect_server, saved_blocks, slug, name, field, secret) -> None:
    url = f"{prefect_server.api_url}/block_types/slug/{slug}/block_documents/name/{name}"
    shown = httpx.get(url)
    assert shown.json()["data"][field] == "********"
    assert saved_blocks[secret] not in shown.text
    listed = httpx.post(f"{prefect_server.api_url}/block_documents/filter", json={})
    assert name in listed.text and saved_blocks[secret] not in listed.text
    # the block does hold it: only asking for secrets shows it
    assert httpx.get(url, params={"include_secrets": "true"}).json()["data"][field] == saved_blocks[secret]


def test_settings_that_name_blocks_get_the_blocks_fields(tmp_path, prefect_server, atproto_network, scout,
                                                         saved_blocks) -> None:
    config = write_config(tmp_path / "c.yaml", atproto_network, letta={"block": "letta-test", "timeout": 5},
                          agents=[{"name": "scout", "agent_id": "agent-1", "account_block": "scout-account"},
                                  {"name": "sage", "agent_id": "agent-2"}])
    with api_of(prefect_server):
        settings = settings_from(str(config))
    scout_agent, sage = settings.agents
    assert (scout_agent.handle, scout_agent.pds_uri) == (scout.handle, atproto_network.pds_url)
    assert scout_agent.app_password.get_secret_value() == saved_blocks["scout"]
    assert (sage.handle, sage.app_password) == (None, None)
    assert (settings.letta.base_url, settings.letta.api_key.get_secret_value(), settings.letta.timeout) == (
        "http://127.0.0.1:8283", LETTA_KEY, 5)


def test_blipflow_config_shows_the_blocks_fields_with_secrets_masked(tmp_path, prefect_server, atproto_network, scout,
                                                                     saved_blocks) -> None:
    config = write_config(tmp_path / "c.yaml", atproto_network, letta={"block": "letta-test"},
                          bluesky={"account_block": "scout-account", "plc_uri": atproto_network.plc_url})
    shown = blipflow_config(config, prefect_server.api_url)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    assert settings["bluesky"] == {"username": scout.handle, "password": "**********",
                                   "pds_uri": atproto_network.pds_url, "plc_uri": atproto_network.plc_url,
                                   "account_block": "scout-account"}
    assert settings["letta"]["api_key"] == "**********"
    for secret in saved_blocks.values():
        assert secret not in shown.stdout + shown.stderr


def test_a_block_that_cannot_be_read_is_one_line_naming_it(tmp_path, prefect_server, atproto_network,
                                                           saved_blocks) -> None:
    config = write_config(tmp_path / "c.yaml", atproto_network, letta={"block": "letta-test"},
                          agents=[{"name": "scout", "agent_id": "agent-1", "account_block": "nobody"}])
    unknown = blipflow_config(config, prefect_server.api_url)
    assert unknown.returncode == 2
    assert unknown.stderr == (f"blipflow: bad config: {config}: agents.0.account_block: no ATProto Account block named "
                              f"'nobody' on the Prefect API at {prefect_server.api_url} "
                              "(saved: refused-account, scout-account)\n")

    dead_api = f"http://127.0.0.1:{free_port()}/api"
    away = blipflow_config(config, dead_api)
    assert away.returncode == 2
    assert away.stderr == (f"blipflow: bad config: {config}: letta.block: cannot load the block 'letta-test': "
                           f"the Prefect API at {dead_api} is unreachable ([Errno 111] Connection refused)\n")



def test_a_block_whose_fields_do_not_fit_its_type_is_one_line(tmp_path, prefect_server, atproto_network,
                                                              saved_blocks) -> None:
    block_type = httpx.get(f"{prefect_server.api_url}/block_types/slug/atproto-account").json()
    [schema] = httpx.post(f"{prefect_server.api_url}/block_schemas/filter",
                          json={"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}}).json()
    saved = httpx.post(f"{prefect_server.api_url}/block_documents/", json={
        "name": "half-account", "block_type_id": block_type["id"], "block_schema_id": schema["id"],
        "data": {"app_password": "half-secret-5k2j"}})  # saved by hand, without a handle
    assert saved.status_code == 201, saved.text
    config = write_config(tmp_path / "c.yaml", atproto_network,
                          agents=[{"name": "scout", "agent_id": "agent-1", "account_block": "half-account"}])
    try:
        refused = blipflow_config(config, prefect_server.api_url)
    finally:  # out of the other tests' list of saved blocks
        assert httpx.delete(f"{prefect_server.api_url}/block_documents/{saved.json()['id']}").status_code == 204
    assert refused.returncode == 2
    assert refused.stderr == (f"blipflow: bad config: {config}: agents.0.account_block: the block 'half-account' is "
                              "not a valid ATProto Account block (handle: Field required)\n")

def test_a_server_without_the_block_type_says_how_to_register_it(tmp_path, prefect_harness, atproto_network) -> None:
    config = write_config(tmp_path / "c.yaml", atproto_network, letta={"block": "letta-prod"})
    unregistered = blipflow_config(config, PREFECT_API_URL.value())
    assert unregistered.returncode == 2
    assert unregistered.stderr == (
        f"blipflow: bad config: {config}: letta.block: no block 'letta-prod': the Prefect API at "
        f"{PREFECT_API_URL.value()} has no Letta Server blocks yet (register the type: prefect block register -f "
        "blocks/letta_server.py)\n")


@pytest.mark.parametrize("section, env, message", [
    ({"letta": {"block": "letta-test", "api_key": "k"}}, {},
     "{config}: letta.api_key: set here and by the block 'letta-test' (letta.block); keep one of them"),
    ({"agents": [{"name": "scout", "agent_id": "a", "account_block": "scout-account", "handle": "scout.test"}]}, {},
     "{config}: agents.0.handle: set here and by the block 'scout-account' (agents.0.account_block); keep one of them"),
    ({"bluesky": {"account_block": "scout-account"}}, {"BLUESKY_PASSWORD": "from-an-old-env-file"},
     "BLUESKY_PASSWORD: bluesky.password: set here and by the block 'scout-account' (bluesky.account_block); "
     "keep one of them"),
])
def test_a_setting_given_by_a_block_and_by_the_config_is_refused(tmp_path, monkeypatch, section, env,
                                                                 message) -> None:
    for name in LEGACY_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(section))
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert str(refused.value) == "bad config: " + message.format(config=config)
    assert "from-an-old-env-file" not in str(refused.value)


def test_a_flow_run_using_blocks_carries_no_secret_in_parameters_logs_or_artifacts(
        tmp_path, prefect_server, atproto_network, human_account, scout, saved_blocks) -> None:
    config = write_config(tmp_path / "c.yaml", atproto_network, agents=[
        {"name": "scout", "agent_id": "agent-1", "account_block": "scout-account"},
        {"name": "refused", "agent_id": "agent-2", "account_block": "refused-account"}])
    plane = ControlPlane(control_url(tmp_path))
    question = ingested(plane, atproto_network, human_account, "who holds the keys?")
    queue(plane, "scout", [question[0]], "not me, the block does")
    queue(plane, "refused", [question[0]], "never posted")

    with api_of(prefect_server):
        state = publish_flow(config_file=str(config), until_idle=True, return_state=True)
        assert state.is_completed() and state.result() == 1
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
            # logs reach the API in batches: wait for the run's last line
            wait_for(lambda: any("publish stopped" in line for line in run_logs(client, run_id)), 30, "the run's logs")
            logs = run_logs(client, run_id)
            task_runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id])))
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))

    assert [record.value["content"] for record in list_records(scout.account)] == ["not me, the block does"]
    assert run.parameters == {"config_file": str(config), "until_idle": True}
    assert any("the PDS refused the handle or app password" in message for message in logs)
    recorded = "\n".join([run.model_dump_json(), *logs, *(task_run.model_dump_json() for task_run in task_runs),
                          *(artifact.model_dump_json() for artifact in artifacts)])
    for secret in saved_blocks.values():
        assert secret not in recorded
