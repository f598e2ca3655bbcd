"""Dispatch tasks: one task run per window delivered (never one per blip)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blipflow.dispatch import Delivery, Dispatcher, Window
from tasks.retries import worth_retrying


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
