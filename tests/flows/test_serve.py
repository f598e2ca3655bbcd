"""`blipflow serve`: prefect.yaml's deployments served by one real process against a real Prefect server
— created with their schedules and parameters, a run of one of them completed, stopped by signal — and
how prefect.yaml becomes served deployments, with one line for each thing it cannot serve."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, State
from prefect.client.schemas.responses import DeploymentResponse

from blipflow.config import ConfigError
from blipflow.store.history import Store
from flows.serving import project_deployments
from tests.flows.test_deployments import state_of, worker  # noqa: F401 - a fixture
from tests.support.ingest_process import PROJECT_ROOT, BlipflowProcess, wait_for
from tests.support.prefect_server import (
    PrefectServer,
    api_client,
    declared_deployments,
    deploy_all,
    free_port,
)

PROJECT_FILE = PROJECT_ROOT / "prefect.yaml"
FLOWS = PROJECT_ROOT / "flows"


def served(client: SyncPrefectClient) -> dict[str, DeploymentResponse]:
    """The deployments on the server that prefect.yaml declares, by name."""
    names = {entry["name"] for entry in declared_deployments()}
    return {deployment.name: deployment for deployment in client.read_deployments() if deployment.name in names}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store = Store(tmp_path / "s.duckdb")
    store.add_counters({"ingest.events": 1})  # a store for maintenance to checkpoint
    path = tmp_path / "config.yaml"
    # ingest, if started, keeps trying a Jetstream that is not there until it is stopped
    path.write_text(yaml.safe_dump({"store": {"path": str(store.path)},
                                    "jetstream": {"instances": [f"ws://127.0.0.1:{free_port()}"],
                                                  "reconnect_delay": 0.5, "max_reconnect_delay": 1.0}}))
    return path


@pytest.fixture
def serving(tmp_path: Path, config: Path, prefect_server: PrefectServer) -> Iterator[BlipflowProcess]:
    """`blipflow -c CONFIG serve` as a process, looking for runs to start every second."""
    process = BlipflowProcess(config, ["serve"], {**prefect_server.env(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
                              tmp_path / "serve.log")
    try:
        yield process
    finally:
        process.stop()
        # Deleting the deployments deletes their scheduled runs, which a later test's worker would run.
        with api_client(prefect_server) as client:
            for deployment in served(client).values():
                client.delete_deployment(deployment.id)


def all_served(prefect_server: PrefectServer, process: BlipflowProcess) -> dict[str, DeploymentResponse]:
    def every_one() -> dict[str, DeploymentResponse] | None:
        assert process.process.poll() is None, f"blipflow serve exited:\n{process.log()[-3000:]}"
        with api_client(prefect_server) as client:
            found = served(client)
        return found if len(found) == len(declared_deployments()) else None

    return wait_for(every_one, 180, "every deployment of prefect.yaml on the server", interval=0.5)


def finished(client: SyncPrefectClient, run_id: UUID) -> State:
    return wait_for(lambda: (state := client.read_flow_run(run_id).state).is_final() and state, 180,
                    f"flow run {run_id} to finish", interval=0.5)


def children(process: BlipflowProcess) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def test_serve_creates_every_deployment_runs_one_and_stops_on_sigterm(prefect_server: PrefectServer, config: Path,
                                                                      serving: BlipflowProcess) -> None:
    deployments = all_served(prefect_server, serving)
    for entry in declared_deployments():
        deployment = deployments[entry["name"]]
        assert deployment.entrypoint.endswith(entry["entrypoint"])
        assert deployment.parameters == {**entry.get("parameters", {}), "config_file": str(config)}
        assert [schedule.schedule.cron for schedule in deployment.schedules] == [
            schedule["cron"] for schedule in entry.get("schedules", [])]
        assert deployment.work_pool_name is None  # served here, not by a worker

    with api_client(prefect_server) as client:
        state = finished(client, client.create_flow_run_from_deployment(deployments["maintenance"].id).id)
        assert state.is_completed(), state.message
        assert state.message.startswith("identities: 0 refreshed, 0 unresolved; store: ")

        serving.signal(signal.SIGTERM)
        assert serving.wait(60) == 0
        assert all(deployment.paused for deployment in served(client).values())
    assert_stopped_serving(serving.log())
    assert "Traceback" not in serving.log()


def test_ctrl_c_cancels_the_runs_in_flight_and_stops_cleanly(prefect_server: PrefectServer,
                                                             serving: BlipflowProcess) -> None:
    deployments = all_served(prefect_server, serving)
    with api_client(prefect_server) as client:
        run = client.create_flow_run_from_deployment(deployments["ingest"].id)
        serving.wait_for_log("ingest starting", 180)  # its run streams its output here
        running = children(serving)
        assert running, "the ingest run is a process of serve's"

        serving.signal(signal.SIGINT)
        assert serving.wait(60) == 0
        assert finished(client, run.id).is_cancelled()
    assert "ingest stopped: " in serving.log()  # its graceful stop: everything received is stored
    assert not [pid for pid in running if Path(f"/proc/{pid}").exists()]
    assert_stopped_serving(serving.log())
    for noise in ("Traceback", "unhandled exception"):  # the cancelled run's output streams here too
        assert noise not in serving.log()


def test_serve_takes_deployments_over_from_prefect_deploy_and_gives_them_back(
        tmp_path: Path, prefect_server: PrefectServer, config: Path, worker) -> None:  # noqa: F811 - the fixture
    names = deploy_all(prefect_server)  # on the work pool, as the README says
    process = BlipflowProcess(config, ["serve"], {**prefect_server.env(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
                              tmp_path / "serve.log")
    try:
        process.wait_for_log("flows.serving: serving ", 180)  # the deployments prefect deploy made are taken over
        deployments = all_served(prefect_server, process)
        assert all(deployment.work_pool_name is None for deployment in deployments.values())
        with api_client(prefect_server) as client:
            state = finished(client, client.create_flow_run_from_deployment(deployments["maintenance"].id).id)
            assert state.is_completed(), f"{state.message}\n{process.log()[-3000:]}"  # not "storage at None"

            process.signal(signal.SIGTERM)
            assert process.wait(60) == 0
            handed_back = served(client)
            assert sorted(handed_back) == sorted(names)
            for deployment in handed_back.values():
                assert deployment.work_pool_name == "blipflow"
                assert deployment.pull_steps  # where its runs find the code, as prefect deploy left it
                assert "config_file" not in deployment.parameters  # serve's -c went with serve

            # the worker path works: a process worker runs a deployment prefect deploy made
            run = client.create_flow_run_from_deployment(handed_back["maintenance"].id,
                                                         parameters={"config_file": str(config)})
            assert state_of(client, run, "Completed", timeout=180) == "Completed"
    finally:
        process.stop()
        with api_client(prefect_server) as client:
            for deployment in served(client).values():
                client.delete_deployment(deployment.id)
    log = process.log()
    assert "taking over ingest, dispatch, publish, analytics, maintenance from work pool blipflow" in log
    assert "handed ingest, dispatch, publish, analytics, maintenance back to work pool blipflow" in log
    assert_stopped_serving(log)
    assert "Traceback" not in log


def assert_stopped_serving(log: str) -> None:
    assert "prefect.runner: All deployments have been paused!" in log  # no schedule fires while nobody serves
    assert log.rstrip().endswith("flows.serving: stopped serving")


def test_each_deployment_of_prefect_yaml_is_served_as_it_is_declared() -> None:
    served_here = {deployment.name: deployment
                   for deployment in project_deployments(PROJECT_FILE, config_file=Path("/srv/blipflow.yaml"))}
    assert list(served_here) == [entry["name"] for entry in declared_deployments()]
    for entry in declared_deployments():
        deployment = served_here[entry["name"]]
        assert deployment.flow_name == entry["entrypoint"].split(":")[1]
        assert deployment.description == entry["description"]
        assert deployment.parameters == {**entry.get("parameters", {}), "config_file": "/srv/blipflow.yaml"}
        assert deployment.concurrency_limit == entry.get("concurrency_limit")
        assert [(schedule.schedule.cron, schedule.schedule.timezone) for schedule in deployment.schedules] == [
            (schedule["cron"], schedule["timezone"]) for schedule in entry.get("schedules", [])]
    assert "config_file" not in project_deployments(PROJECT_FILE)[0].parameters  # without -c: as declared


def test_intervals_triggers_and_collision_strategies_are_served_too(tmp_path: Path) -> None:
    project = tmp_path / "prefect.yaml"
    project.write_text(yaml.safe_dump({"deployments": [{
        "name": "tidy", "entrypoint": f"{FLOWS}/maintenance.py:maintenance", "tags": ["upkeep"],
        "schedules": [{"interval": 600, "active": False}],
        "concurrency_limit": {"limit": 1, "collision_strategy": "CANCEL_NEW"},
        "triggers": [{"type": "event", "match": {"prefect.resource.id": "prefect.flow-run.*"},
                      "expect": ["prefect.flow-run.Completed"]}],
    }]}))
    [deployment] = project_deployments(project)
    [schedule] = deployment.schedules
    assert (schedule.schedule.interval, schedule.active) == (timedelta(minutes=10), False)
    assert deployment.concurrency_options.collision_strategy is ConcurrencyLimitStrategy.CANCEL_NEW
    assert deployment.tags == ["upkeep"]
    [trigger] = deployment.triggers
    assert trigger.expect == {"prefect.flow-run.Completed"}


@pytest.mark.parametrize("entry, problem", [
    ({"name": "tidy", "entrypoint": "maintenance.py:maintenance"},
     "deployment tidy: cannot load maintenance.py:maintenance: "),
    ({"name": "tidy", "entrypoint": f"{FLOWS}/maintenance.py:nothing_here"},
     f"deployment tidy: cannot load {FLOWS}/maintenance.py:nothing_here: "),
    ({"name": "tidy", "entrypoint": f"{FLOWS}/maintenance.py:maintenance", "schedules": [{"cron": "every hour"}]},
     'deployment tidy: Invalid cron string: "every hour"'),
    ({"name": "tidy", "entrypoint": f"{FLOWS}/maintenance.py:maintenance", "schedule": {"cron": "0 * * * *"}},
     "deployment tidy: blipflow serve does not know schedule"),
    ({"name": "tidy"}, "deployment tidy: needs a name and an entrypoint"),
])
def test_what_cannot_be_served_is_one_line(tmp_path: Path, entry: dict, problem: str) -> None:
    project = tmp_path / "prefect.yaml"
    project.write_text(yaml.safe_dump({"deployments": [entry]}))
    with pytest.raises(ConfigError) as refused:
        project_deployments(project)
    assert str(refused.value).startswith(f"bad {project}: {problem}")
    assert "\n" not in str(refused.value)
