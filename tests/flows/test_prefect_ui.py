"""What someone who deploys blipflow sees: `prefect deploy --all` from the repository root against a real
Prefect server, then that server's own UI in Chromium lists every deployment prefect.yaml declares; and
the page of a real dispatch run says what each window came to (a line of its round's task run) and which
agent is blocked, and why."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.responses import DeploymentResponse
from prefect.states import Cancelled

from blipflow.control.circuits import Circuits
from blipflow.model.ledger import Circuit
from tests.dispatch.test_dispatcher import HUMAN, post
from tests.flows.test_observe import long_running_dispatch, task_runs_of, windows_told
from tests.support.browser import Browser
from tests.support.fake_letta import FakeLetta
from tests.support.fed_stores import FedStores
from tests.support.ingest_process import wait_for
from tests.support.prefect_server import PrefectServer, api_client, deploy_all


def deployments_named(client: SyncPrefectClient, names: list[str]) -> list[DeploymentResponse]:
    return client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names)))


@pytest.fixture(scope="module")
def deployment_names(prefect_server: PrefectServer) -> Iterator[list[str]]:
    """Deploy everything prefect.yaml declares, the way the README says; its deployments' names."""
    names = deploy_all(prefect_server)
    try:
        yield names
    finally:
        # Deleting them deletes their scheduled runs too, which a worker of a later test would otherwise run.
        with api_client(prefect_server) as client:
            for deployment in deployments_named(client, names):
                client.delete_deployment(deployment.id)


@pytest.fixture
def one_run_of_each(prefect_server: PrefectServer, deployment_names: list[str]) -> Iterator[None]:
    """A flow run of every deployment for the runs page to list. They are created Cancelled, so no worker
    ever runs them, and deleted afterwards."""
    with api_client(prefect_server) as client:
        deployments = deployments_named(client, deployment_names)
        assert sorted(deployment.name for deployment in deployments) == sorted(deployment_names)
        runs = [client.create_flow_run_from_deployment(
                    deployment.id, state=Cancelled(message="created for the UI test; never runs"))
                for deployment in deployments]
        try:
            yield
        finally:
            for run in runs:
                client.delete_flow_run(run.id)


def ui_url(server: PrefectServer, page: str) -> str:
    return server.api_url.removesuffix("/api") + page


@pytest.mark.parametrize("page", ["/deployments", "/v2/deployments"], ids=["ui", "ui-v2"])
def test_the_deployments_page_lists_every_deployment(browser: Browser, prefect_server: PrefectServer,
                                                     deployment_names: list[str], page: str) -> None:
    browser.open(ui_url(prefect_server, page), expect=deployment_names,
                 screenshot="prefect-ui" + page.replace("/", "-"))


def test_the_flow_runs_page_names_the_deployment_of_every_run(browser: Browser, prefect_server: PrefectServer,
                                                              deployment_names: list[str], one_run_of_each: None) -> None:
    # The first UI's runs list names each run's deployment; the V2 UI's (Prefect 3.8.8) shows only the flow.
    browser.open(ui_url(prefect_server, "/runs"), expect=[f"Deployment {name}" for name in deployment_names],
                 screenshot="prefect-ui-runs")


def test_a_dispatch_run_page_says_what_each_window_came_to_and_which_agent_is_blocked(
        tmp_path, browser: Browser, prefect_server: PrefectServer) -> None:
    fake = FakeLetta().start()
    try:
        config = fake.config(tmp_path, [{"name": "scout", "agent_id": fake.create_agent()},
                                        {"name": "ghost", "agent_id": fake.create_agent()}],
                             dispatch={"breaker_cooldown": 600})
        store = FedStores.beside(tmp_path / "s.duckdb")
        # as an earlier process left it
        Circuits(store.plane).save("ghost", Circuit("open", 5, datetime.now(timezone.utc), None))
        post(store, HUMAN, "hello there")
        post(store, HUMAN, "nothing to say to this [[silent]]")
        with long_running_dispatch(prefect_server, config, tmp_path / "dispatch.log") as run:
            def scouts_windows() -> tuple[list[dict], dict[str, str]] | None:
                rounds = [task_run for task_run in task_runs_of(prefect_server, run["id"])
                          if task_run["state_type"] == "COMPLETED"]
                told = windows_told(prefect_server, rounds)
                # the server files a run's state from its events a moment after its state type
                return (rounds, told) if len(told) == 2 and all(task_run["state"] for task_run in rounds) else None
            rounds, told = wait_for(scouts_windows, 60, "scout's two windows to be delivered")
            assert {task_run["name"].split(" from ")[0] for task_run in rounds} == {"scout: windows"}
            assert sorted(message.split(",")[0] for message in told.values()) == [
                "1 blip → 1 reply", "1 blip → silent"]

            page = ui_url(prefect_server, f"/runs/flow-run/{run['id']}")
            blocked = "blocked: ghost (circuit open after failed calls; retried every 600 s)"
            # the run's log: each window's line and its round's final state, with the name of its task run;
            # ghost blocked
            browser.open(page, expect=[*(task_run["name"] for task_run in rounds),
                                       *(f"window {window}: {said}" for window, said in told.items()),
                                       *(f"Completed('{task_run['state']['message']}')" for task_run in rounds),
                                       "agent ghost is blocked: circuit open after failed calls; retried every 600 s"],
                         screenshot="prefect-ui-dispatch-run")
            browser.open(page + "?tab=Details", screenshot="prefect-ui-dispatch-run-details",
                         expect=[f"State Message {blocked}"])
    finally:
        fake.stop()
