"""Dispatch tasks: one task run per window delivered (never one per blip), named for its agent and blips
and ending with what came of it, so the run's page reads as what was done."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from blipflow.dispatch.dispatcher import Delivery, Dispatcher, Window
from tasks.retries import worth_retrying
from tasks.words import completed_saying, counted


def window_run_name(parameters: dict[str, Any]) -> str:
    """`scout: 2 blips (3f9c1a2e)` — the agent, the window's size and the start of its id."""
    window: Window = parameters["window"]
    return f"{window.agent}: {counted(window.size, 'blip')} ({window.id[:8]})"


@task(
    name="deliver-window",
    task_run_name=window_run_name,
    # Enough retries for the breaker's default 5 failed calls: the failure that opens the circuit ends the
    # task run (not worth retrying), and the window waits for the cooldown.
    retries=5,
    retry_delay_seconds=[1, 5, 15, 30, 60],
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,  # the dispatcher carries a Letta client: never hash or persist it
)
def deliver_window(dispatcher: Dispatcher, window: Window) -> State[Delivery]:
    delivery = dispatcher.deliver(window)
    return completed_saying(delivery_told(delivery), delivery)


def delivery_told(delivery: Delivery) -> str:
    """What came of a window, in a few words: `2 blips → 1 reply, 204 ms`."""
    sent = f"{counted(delivery.blips, 'blip')} →"
    if delivery.outcome == "in_flight":
        return f"{sent} sent before, may still be answered at Letta: looked at again shortly"
    if delivery.outcome == "silent":
        return f"{sent} silent, {delivery.letta_ms:.0f} ms"
    if delivery.outcome == "recovered":
        return f"{sent} {counted(delivery.replies, 'reply')}, recovered from the call made before"
    if delivery.outcome == "answered":
        return f"{sent} {counted(delivery.replies, 'reply')}, {delivery.letta_ms:.0f} ms"
    if delivery.outcome == "quarantined":
        return f"{sent} quarantined: {delivery.reason}"
    return f"{sent} {delivery.outcome}"
