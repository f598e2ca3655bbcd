"""What someone who deploys blipflow sees: `prefect deploy --all` from the repository root against a real
Prefect server, then that server's own UI in Chromium lists every deployment prefect.yaml declares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.responses import DeploymentResponse
from prefect.states import Cancelled

from tests.support.browser import Browser
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
