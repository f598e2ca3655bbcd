"""`blipflow serve`: every deployment of prefect.yaml, served by this one process with Prefect's runner
(what `prefect.serve` does; for development and small installs, a work pool and workers otherwise).

The deployments are read from prefect.yaml — entrypoint, parameters, schedules, triggers, concurrency
limit — so serving and `prefect deploy --all` cannot drift apart. Entrypoints are relative to the
folder of prefect.yaml; each flow run is a process of its own, started in the current directory, like
any other blipflow command. A deployment's work pool has no use here and is left out.

SIGTERM and Ctrl-C stop serving gracefully: the runs in flight are cancelled (their flows get SIGTERM,
store what they hold and end Cancelled) and the deployments' schedules paused. `prefect.serve` itself
would leave SIGTERM to Prefect 3.8.8's runner, whose handler never awaits its own stop and exits from
inside the event loop, and Ctrl-C to a KeyboardInterrupt that leaves the runs in flight Running.

Serving and `prefect deploy --all` share the deployments' names (`prefect deployment run ingest/ingest`
starts either). A deployment `prefect deploy` put on a work pool is taken over while serving — kept as it
was, then deleted, so that the runner creates it afresh: re-registered in place, it would keep the work
pool and lose the path its runs load their code from — and handed back on stopping, recreated as it was
(work pool, pull steps, parameters, schedules), so a worker runs it again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.client.schemas.responses import DeploymentResponse
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentTriggerTypes
from prefect.exceptions import ObjectNotFound
from prefect.flows import load_flow_from_entrypoint
from prefect.runner import Runner
from prefect.schedules import Schedule
from pydantic import TypeAdapter, ValidationError

from blipflow.config import ConfigError

# What a deployment of prefect.yaml may say, besides its name and entrypoint, that serving uses...
SERVED_KEYS = {"description", "parameters", "schedules", "concurrency_limit", "triggers", "tags", "version",
               "paused", "enforce_parameter_schema"}
# ...and what only deploying to a work pool uses.
WORK_POOL_KEYS = {"work_pool", "build", "push", "pull"}
TRIGGERS = TypeAdapter(DeploymentTriggerTypes)
RUNS_END_WITHIN = 30.0  # seconds a cancelled run has to store what it holds and end

log = logging.getLogger(__name__)


class ServingRunner(Runner):
    """Prefect's runner, stopped by SIGTERM or SIGINT the graceful way: the runs it started are cancelled
    (their flows get SIGTERM and end Cancelled) and the deployments' schedules paused."""

    def handle_sigterm(self, *args: Any) -> None:
        if self.stopping:
            return  # on the way out already
        if not self.started:
            raise KeyboardInterrupt  # not serving yet: nothing to cancel
        # A signal handler runs in the event loop's thread, between its steps: the stop goes on there.
        loop = asyncio.get_running_loop()
        self.stopping_task = loop.create_task(self.astop())
        loop.call_soon_threadsafe(lambda: None)  # wakes the loop, which would otherwise sleep on


    async def cancel_all(self) -> None:
        """Cancel the runs in flight, then wait (a while) for their processes to end: until they do, their
        output still streams here, and stopping the runner stops that."""
        await super().cancel_all()
        deadline = asyncio.get_running_loop().time() + RUNS_END_WITHIN
        while self._flow_run_process_map and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)


def serve_project(project_file: Path, *, config_file: Path | None = None) -> None:
    """Serve every deployment of `project_file` until SIGTERM or Ctrl-C; with `config_file`, their runs
    read it (as their `config_file` parameter, unless prefect.yaml sets one)."""
    runner = ServingRunner(pause_on_shutdown=True)
    deployments = project_deployments(project_file, config_file=config_file)
    with get_client(sync_client=True) as client:
        taken = take_over(client, deployments)
        try:
            for deployment in deployments:
                runner.add_deployment(deployment)  # registers it with the API
            log.info("serving %s; start one with `prefect deployment run <flow>/<deployment>` (Ctrl-C stops)",
                     ", ".join(full_name(deployment.flow_name, deployment.name) for deployment in deployments))
            signal.signal(signal.SIGINT, runner.handle_sigterm)  # the runner itself takes SIGTERM when it starts
            asyncio.run(runner.start())
        except KeyboardInterrupt:
            pass
        finally:
            hand_back(client, taken)
    log.info("stopped serving")


def full_name(flow_name: str, name: str) -> str:
    return f"{flow_name}/{name}"


def take_over(client: SyncPrefectClient, deployments: list[RunnerDeployment]) -> list[DeploymentResponse]:
    """The deployments of the same names that `prefect deploy` put on a work pool, as they were; deleted,
    for the runner to create them afresh."""
    on_work_pools = [found for deployment in deployments
                     if (found := existing(client, full_name(deployment.flow_name, deployment.name))) is not None
                     and found.work_pool_name]
    for deployment in on_work_pools:
        client.delete_deployment(deployment.id)
    if on_work_pools:
        log.info("taking over %s from work pool %s while serving; stopping gives them back (were serve killed, "
                 "`prefect deploy --all` puts them back)", ", ".join(deployment.name for deployment in on_work_pools),
                 ", ".join(sorted({deployment.work_pool_name or "" for deployment in on_work_pools})))
    return on_work_pools


def existing(client: SyncPrefectClient, name: str) -> DeploymentResponse | None:
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def hand_back(client: SyncPrefectClient, taken: list[DeploymentResponse]) -> None:
    """Recreate the deployments taken over as `prefect deploy` left them, in place of the served ones."""
    for deployment in taken:
        served = existing(client, full_name(client.read_flow(deployment.flow_id).name, deployment.name))
        if served is not None:
            client.delete_deployment(served.id)
        client.create_deployment(
            flow_id=deployment.flow_id, name=deployment.name, version=deployment.version,
            description=deployment.description, tags=deployment.tags, parameters=deployment.parameters,
            parameter_openapi_schema=deployment.parameter_openapi_schema,
            enforce_parameter_schema=deployment.enforce_parameter_schema, paused=deployment.paused,
            schedules=[DeploymentScheduleCreate(schedule=schedule.schedule, active=schedule.active,
                                                parameters=schedule.parameters, slug=schedule.slug)
                       for schedule in deployment.schedules],
            concurrency_limit=deployment.global_concurrency_limit.limit if deployment.global_concurrency_limit else None,
            concurrency_options=deployment.concurrency_options,
            work_pool_name=deployment.work_pool_name, work_queue_name=deployment.work_queue_name,
            job_variables=deployment.job_variables, pull_steps=deployment.pull_steps, path=deployment.path,
            entrypoint=deployment.entrypoint, storage_document_id=deployment.storage_document_id,
        )
    if taken:
        log.info("handed %s back to work pool %s", ", ".join(deployment.name for deployment in taken),
                 ", ".join(sorted({deployment.work_pool_name or "" for deployment in taken})))


def project_deployments(project_file: Path, *, config_file: Path | None = None) -> list[RunnerDeployment]:
    try:
        declared = (yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}).get("deployments") or []
    except (OSError, yaml.YAMLError, AttributeError) as error:
        raise ConfigError(f"bad {project_file}: {' '.join(str(error).split())}") from None
    if not declared:
        raise ConfigError(f"bad {project_file}: no deployments to serve")
    return [runner_deployment(entry, project_file, config_file) for entry in declared]


def runner_deployment(entry: dict[str, Any], project_file: Path, config_file: Path | None) -> RunnerDeployment:
    name = entry.get("name", "?")
    where = f"bad {project_file}: deployment {name}"
    unknown = sorted(set(entry) - {"name", "entrypoint"} - SERVED_KEYS - WORK_POOL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: blipflow serve does not know {', '.join(unknown)}")
    if "entrypoint" not in entry or "name" not in entry:
        raise ConfigError(f"{where}: needs a name and an entrypoint")
    path, _, function = entry["entrypoint"].partition(":")
    try:
        flow = load_flow_from_entrypoint(f"{project_file.parent / path}:{function}", use_placeholder_flow=False)
    except Exception as error:  # noqa: BLE001 - a missing file or function, or an import error in it
        raise ConfigError(f"{where}: cannot load {entry['entrypoint']}: {' '.join(str(error).split())}") from None
    parameters = dict(entry.get("parameters") or {})
    if config_file is not None and "config_file" in flow.parameters.properties:
        parameters.setdefault("config_file", str(config_file))
    try:
        return flow.to_deployment(
            name=name,
            parameters=parameters,
            schedules=[schedule(fields) for fields in entry.get("schedules") or []],
            triggers=[TRIGGERS.validate_python(trigger) for trigger in entry.get("triggers") or []],
            concurrency_limit=concurrency_limit(entry.get("concurrency_limit")),
            **{key: entry[key] for key in ("description", "tags", "version", "paused", "enforce_parameter_schema")
               if key in entry},
        )
    except (TypeError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        detail = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
        raise ConfigError(f"{where}: {' '.join(detail.split())}") from None


def schedule(fields: dict[str, Any]) -> Schedule:
    """A schedule as prefect.yaml writes it: `cron`, `interval` (seconds) or `rrule`, with `timezone`,
    `active`, `parameters`... (the fields of prefect.schedules.Schedule)."""
    if isinstance(fields.get("interval"), (int, float)):
        fields = {**fields, "interval": timedelta(seconds=fields["interval"])}
    return Schedule(**fields)


def concurrency_limit(value: int | dict[str, Any] | None) -> int | ConcurrencyLimitConfig | None:
    return ConcurrencyLimitConfig(**value) if isinstance(value, dict) else value
