"""Dispatch tasks: one task run per window delivered (never one per blip)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blipflow.dispatch import Delivery, Dispatcher, Window
from blipflow.letta import AgentCallFailed


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Timeouts, lost connections, 429 and 5xx are retried; a bad key or an unknown agent is not."""
    try:
        state.result()
    except AgentCallFailed as failure:
        return failure.transient
    except Exception:  # noqa: BLE001 - anything else (the store, say) may well pass on a second try
        return True
    return False


@task(
    name="deliver-window",
    task_run_name="deliver {window.agent} {window.id}",
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,  # the dispatcher carries a Letta client: never hash or persist it
)
def deliver_window(dispatcher: Dispatcher, window: Window) -> Delivery:
    return dispatcher.deliver(window)
