"""Dispatch tasks: one task run per window delivered (never one per blip)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blipflow.dispatch import Delivery, Dispatcher, Window
from tasks.retries import worth_retrying


@task(
    name="deliver-window",
    task_run_name="deliver {window.agent} {window.id}",
    # Enough retries for the breaker's default 5 failed calls: the failure that opens the circuit ends the
    # task run (not worth retrying), and the window waits for the cooldown.
    retries=5,
    retry_delay_seconds=[1, 5, 15, 30, 60],
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,  # the dispatcher carries a Letta client: never hash or persist it
)
def deliver_window(dispatcher: Dispatcher, window: Window) -> Delivery:
    return dispatcher.deliver(window)
