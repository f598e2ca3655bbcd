"""Dispatch tasks: one task run per round of an agent's windows (never one per blip), named for its agent
and first window; each window delivered is a line of its log, and the run ends saying what came of them
all, so the run's page reads as what was done. A window whose delivery fails is retried on its own, by
the task's retries (see tasks.rounds)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from blipflow.dispatch.dispatcher import Delivery, Dispatcher, Window
from blipflow.model.formatting import counted
from tasks.retries import worth_retrying
from tasks.rounds import Round


def round_run_name(parameters: dict[str, Any]) -> str:
    """`scout: windows from 3f9c1a2e` — the agent, and the start of its first window's id."""
    windows: Round[Window] = parameters["windows"]
    return f"{windows.lane}: windows from {windows.first.id[:8]}"


@task(
    name="deliver-windows",
    task_run_name=round_run_name,
    # Enough retries for the breaker's default 5 failed calls: the failure that opens the circuit ends the
    # task run (not worth retrying), and the window waits for the cooldown.
    retries=5,
    retry_delay_seconds=[1, 5, 15, 30, 60],
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,  # the dispatcher carries a Letta client: never hash or persist it
)
def deliver_windows(dispatcher: Dispatcher, windows: Round[Window]) -> State[list[Delivery]]:
    logger = get_run_logger()
    for window in windows.items():
        delivery = dispatcher.deliver(window)
        logger.info("%s", window_told(delivery))
        windows.done(delivery)
    told = round_told(windows.results)
    if len(windows.results) > 1:  # one window's line says it all already
        logger.info("%s", told)
    return Completed(message=told, data=windows.results)


def window_told(delivery: Delivery) -> str:
    """What came of a window, in a few words: `window 3f9c1a2e: 2 blips → 1 reply, 204 ms`."""
    sent = f"window {delivery.window[:8]}: {counted(delivery.blips, 'blip')} →"
    if delivery.outcome == "in_flight":
        return f"{sent} sent before, may still be answered at Letta: looked at again shortly"
    if delivery.outcome == "handed_over":
        return f"{sent} not sent: its agent is another dispatch process's now, which sends it"
    if delivery.outcome == "silent":
        return f"{sent} silent, {delivery.letta_ms:.0f} ms"
    if delivery.outcome == "recovered":
        return f"{sent} {counted(delivery.replies, 'reply')}, recovered from the call made before"
    if delivery.outcome == "answered":
        return f"{sent} {counted(delivery.replies, 'reply')}, {delivery.letta_ms:.0f} ms"
    if delivery.outcome == "quarantined":
        return f"{sent} quarantined: {delivery.reason}"
    return f"{sent} {delivery.outcome}"


def round_told(deliveries: list[Delivery]) -> str:
    """What came of a round: its one window's line, or `12 windows: 30 blips → 9 replies, 3 silent`."""
    if len(deliveries) == 1:
        return window_told(deliveries[0])
    outcomes = Counter(delivery.outcome for delivery in deliveries)
    told = (f"{counted(len(deliveries), 'window')}: {counted(sum(d.blips for d in deliveries), 'blip')} → "
            f"{counted(sum(d.replies for d in deliveries), 'reply')}")
    for outcome, said in (("silent", "silent"), ("quarantined", "quarantined"), ("in_flight", "in flight"),
                          ("handed_over", "handed over")):
        if outcomes[outcome]:
            told += f", {outcomes[outcome]} {said}"
    return told
