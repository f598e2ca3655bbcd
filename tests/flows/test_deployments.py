"""blipflow deployed the way the README says — `prefect deploy --all` from the repository root, a process
worker on the `blipflow` pool — against a real Prefect server, and the deployments run the whole loop on
the local network: ingest runs (Running) until cancelled, dispatch and publish runs (until idle) end
Completed, the runs leave artifacts and events, and cancelling ingest ends it Cancelled with every blip it
had received stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelling

from tests.support.agent_accounts import agent_account
from tests.support.chat_loop import ChatLoop
from tests.support.ingest_process import wait_for
from tests.support.network import list_records
from tests.support.prefect_server import (
    REPO_ROOT,
    PrefectServer,
    api_client,
    deploy_all,
)


@pytest.fixture
def worker(prefect_server: PrefectServer, tmp_path) -> Iterator[subprocess.Popen]:
    """`prefect worker start --pool blipflow`, as the README says, polling every second; stopped by its PID."""
    log = open(tmp_path / "worker.log", "wb")
    env = {**prefect_server.env(), "PWD": str(REPO_ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "blipflow"],
                               cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()


@pytest.fixture
def deployments(prefect_server: PrefectServer) -> Iterator[dict[str, UUID]]:
    """Every deployment of prefect.yaml, by name; the scheduled ones paused, so that no scheduled run comes
    due while the worker runs (they would work on the default store)."""
    names = deploy_all(prefect_server)
    with api_client(prefect_server) as client:
        found = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names)))
        for deployment in found:
            if deployment.schedules:
                client.pause_deployment(deployment.id)
        ids = {deployment.name: deployment.id for deployment in found}
    try:
        yield ids
    finally:
        with api_client(prefect_server) as client:
            for deployment_id in ids.values():
                client.delete_deployment(deployment_id)


def run_of(client: SyncPrefectClient, deployment_id: UUID, **parameters: object) -> FlowRun:
    return client.create_flow_run_from_deployment(deployment_id, parameters=parameters)


def state_of(client: SyncPrefectClient, run: FlowRun, *names: str, timeout: float = 120) -> str:
    def reached() -> str | None:
        state = client.read_flow_run(run.id).state
        if state is not None and state.is_final() and state.name not in names:
            raise AssertionError(f"flow run {run.name} ended {state.name}: {state.message}")
        return state.name if state is not None and state.name in names else None

    return wait_for(reached, timeout, f"flow run {run.name} to be {' or '.join(names)}", 0.5)


def events_named(server: PrefectServer, prefix: str) -> list[dict]:
    return server.found("/events/filter", {"filter": {"event": {"prefix": [prefix]}}, "limit": 50})


def test_the_deployments_run_the_loop_under_a_worker(
        tmp_path, atproto_network, human_account, jetstream, letta_server, prefect_server, deployments, worker):
    scout = agent_account(atproto_network, "deployed")
    # flush_interval 3 s: a blip received just before the cancel is still in memory when the worker stops ingest
    loop = ChatLoop(tmp_path, atproto_network, jetstream.url, letta_server.base_url, prefect_server.env(),
                    [scout.config("deployed", letta_server.create_agent("letta_v1_agent"))],
                    ingest={"flush_interval": 3.0, "report_interval": 1.0})
    config = str(loop.config)
    with api_client(prefect_server) as client:
        ingest = run_of(client, deployments["ingest"], config_file=config)
        assert state_of(client, ingest, "Running") == "Running"
        wait_for(lambda: events_named(prefect_server, "blipflow.ingest.connected"), 60, "ingest to connect")

        question, _ = atproto_network.post_blip(human_account, "Deployed yet? [[reply:Deployed and listening.]]")
        wait_for(lambda: loop.store.query_all("SELECT 1 FROM blips WHERE uri = ?", [question]), 60,
                 "the question stored by the ingest run")

        dispatch = run_of(client, deployments["dispatch"], config_file=config, until_idle=True)
        assert state_of(client, dispatch, "Completed") == "Completed"
        assert loop.rows("SELECT agent, state FROM windows") == [("deployed", "answered")]
        publish = run_of(client, deployments["publish"], config_file=config, until_idle=True)
        assert state_of(client, publish, "Completed") == "Completed"
        [answer] = list_records(scout.account)
        assert answer.value["content"] == "Deployed and listening."

        late, _ = atproto_network.post_blip(human_account, "one more, just before the cancel")
        time.sleep(1.0)  # through the stand-in to the ingest process, not yet flushed to the store
        client.set_flow_run_state(ingest.id, Cancelling(), force=True)
        assert state_of(client, ingest, "Cancelled") == "Cancelled"
    assert loop.store.query_all("SELECT content FROM blips WHERE uri = ?", [late]) == [
        ("one more, just before the cancel",)]  # stored on the way out: nothing lost

    artifacts = {a["key"]: a for a in prefect_server.found("/artifacts/latest/filter", {
        "artifacts": {"key": {"any_": ["ingest-progress", "dispatch-windows", "publish-replies"]}}})}
    assert "events per second" in artifacts["ingest-progress"]["data"]
    [window] = json.loads(artifacts["dispatch-windows"]["data"])
    assert (window["agent"], window["outcome"]) == ("deployed", "answered")
    [posted] = json.loads(artifacts["publish-replies"]["data"])
    assert (posted["agent"], posted["uri"]) == ("deployed", answer.uri)

    assert events_named(prefect_server, "blipflow.ingest.progress")
    # this test's agent only (the session's server holds other tests' events), once the server has filed it
    published = wait_for(lambda: prefect_server.found("/events/filter", {"filter": {
        "event": {"prefix": ["blipflow.reply.published"]}, "any_resource": {"id": ["blipflow.agent.deployed"]}},
        "limit": 50}), 30, "the reply's published event", 0.5)
    assert [(e["resource"]["prefect.resource.id"], e["payload"]["uri"]) for e in published] == [
        ("blipflow.agent.deployed", answer.uri)]
    assert scout.app_password not in json.dumps(artifacts) + json.dumps(published)
