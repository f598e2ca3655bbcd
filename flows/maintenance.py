"""The maintenance flow: upkeep the other flows leave behind. The `maintenance` deployment runs it hourly.

- the store's identities older than `identity.ttl_seconds` are resolved again, so `history` and
  analytics find them fresh instead of waiting on the PLC directory, and those dispatch resolved (in
  the control plane, its own cache) are handed to the store;
- the store is checkpointed: what the write-ahead log holds goes into the file (a process killed
  mid-write leaves its log behind);
- finished runs of blipflow's flows older than `maintenance.keep_flow_runs_days` are deleted from
  the Prefect server (runs still going, and other projects' flows, stay).

Each is a task of its own, and each runs whatever the others do; the run fails if any of them did.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import allow_failure, flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State

from blocks.loading import settings_from
from tasks.maintenance import checkpoint_store, delete_old_flow_runs, refresh_identities

# The flows whose old runs are deleted: blipflow's own (a test holds this to the flows/ package).
BLIPFLOW_FLOWS = ["ingest", "dispatch", "publish", "analytics", "maintenance"]


@flow(name="maintenance")
def maintenance(config_file: str | None = None) -> State:
    """Refresh expired identities, checkpoint the store, delete old flow runs; one line says how it went."""
    settings = settings_from(config_file)
    logger = get_run_logger()
    # (what, its task run, how its result reads)
    work: list[tuple[str, PrefectFuture[Any], Callable[[Any], str]]] = []
    if settings.store.path.exists():
        refreshed = refresh_identities.submit(settings)
        work.append(("identities", refreshed, lambda done: f"{done.resolved} refreshed, {done.unresolved} unresolved"))
        # after the refresh has written, whether or not it succeeded
        work.append(("store", checkpoint_store.submit(settings.store, wait_for=[allow_failure(refreshed)]),
                     lambda size: f"{size[0] // 1024} KiB in use, {size[1] // 1024} KiB free"))
    else:
        logger.info("no store at %s yet: no identities to refresh, nothing to checkpoint", settings.store.path)
    if settings.maintenance.keep_flow_runs_days is not None:
        finished_before = datetime.now(timezone.utc) - timedelta(days=settings.maintenance.keep_flow_runs_days)
        work.append(("flow runs", delete_old_flow_runs.submit(BLIPFLOW_FLOWS, finished_before),
                     lambda deleted: f"{deleted} deleted"))

    outcomes, failed = [], False
    for what, future, reads in work:
        future.wait()
        if future.state.is_completed():
            outcomes.append(f"{what}: {reads(future.result())}")
        else:
            outcomes.append(f"{what}: failed: {future.state.result(raise_on_failure=False)}")  # the exception
            failed = True
    summary = "; ".join(outcomes) or "nothing to do"
    logger.info("%s", summary)
    return Failed(message=summary) if failed else Completed(message=summary)
