"""What someone who deploys blipflow sees: `prefect deploy --all` from the repository root against a real
Prefect server, then that server's own UI in Chromium lists every deployment prefect.yaml declares."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.responses import DeploymentResponse
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled

from tests.support.browser import Browser
from tests.support.prefect_server import PrefectServer
from tests.support.scripted_model import REPO_ROOT


def declared_deployments() -> list[dict]:
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]


def run_prefect(server: PrefectServer, *args: str) -> None:
    # prefect.yaml's pull step records `{{ $PWD }}`: the repository root, as in a user's shell there
    env = {**server.env(), "PWD": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=REPO_ROOT, env=env, check=False,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@contextmanager
def api_client(server: PrefectServer) -> Iterator[SyncPrefectClient]:
    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        yield client


def deployments_named(client: SyncPrefectClient, names: list[str]) -> list[DeploymentResponse]:
    return client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names)))


@pytest.fixture(scope="module")
def deployment_names(prefect_server: PrefectServer) -> Iterator[list[str]]:
    """Deploy everything prefect.yaml declares, the way the README says; its deployments' names."""
    deployments = declared_deployments()
    names = [deployment["name"] for deployment in deployments]
    for pool in sorted({deployment["work_pool"]["name"] for deployment in deployments}):
        # --overwrite: other tests of the session may have created the pool already
        run_prefect(prefect_server, "work-pool", "create", pool, "--type", "process", "--overwrite")
    run_prefect(prefect_server, "deploy", "--all")
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
