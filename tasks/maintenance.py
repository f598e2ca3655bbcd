"""Maintenance tasks: the identity cache, the store file and Prefect's own history, each a small task."""

from __future__ import annotations

from datetime import datetime

from prefect import get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import TERMINAL_STATES
from prefect.exceptions import ObjectNotFound

from blipflow.config import Settings, StoreConfig
from blipflow.control.engine import ControlPlane
from blipflow.control.identities import Identities
from blipflow.network.identity import IdentityResolver, RefreshedIdentities
from blipflow.store.history import Store
from tasks.analytics import store_was_busy

RUNS_PER_PAGE = 200


# Upkeep is never cached: each run does it anew (and settings hold secrets, never to be hashed or persisted).
@task(name="refresh-identities", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=store_was_busy,
      cache_policy=NO_CACHE)
def refresh_identities(settings: Settings) -> RefreshedIdentities:
    """Resolve the history store's expired identities again, and hand it those dispatch resolved in the
    control plane (dispatch never opens the store): analytics and `history` name authors from the store."""
    store = Store.from_config(settings.store)
    resolver = IdentityResolver.from_settings(store, settings)
    try:
        refreshed = resolver.refresh_expired(settings.maintenance.identity_refresh_limit)
    finally:
        resolver.close()
    store.save_identities(Identities(ControlPlane.from_settings(settings)).all(), only_newer=True)
    return refreshed


@task(name="checkpoint-store", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=store_was_busy,
      cache_policy=NO_CACHE)
def checkpoint_store(config: StoreConfig) -> tuple[int, int]:
    """(bytes in use, bytes free) in the store file after the checkpoint."""
    return Store.from_config(config).checkpoint()


@task(name="delete-old-flow-runs", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def delete_old_flow_runs(flow_names: list[str], finished_before: datetime) -> int:
    """Delete the runs of these flows that finished before `finished_before`; how many were deleted.
    Runs still going (a long-running ingest, say) and those of other projects' flows stay."""
    finished_early = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(TERMINAL_STATES))),
                                   end_time=FlowRunFilterEndTime(before_=finished_before))
    deleted = 0
    with get_client(sync_client=True) as client:
        while runs := client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=flow_names)),
                                            flow_run_filter=finished_early, limit=RUNS_PER_PAGE):
            for run in runs:
                try:
                    client.delete_flow_run(run.id)
                except ObjectNotFound:
                    continue  # deleted meanwhile by someone else: gone all the same
                deleted += 1
    return deleted
