"""Long-running work in rounds: each round plans what is ready, runs the first item of every lane side
by side (one Prefect task run each), and waits for them; a round with nothing to do sleeps for the
poll interval. Items of one lane (an agent, an account) go one at a time, in order.

SIGTERM or Ctrl-C lets the round in hand finish, then stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from blipflow.shutdown import stop_on_signals

Item = TypeVar("Item")


def results_in_rounds(
    plan: Callable[[], Sequence[Item]],
    lane: Callable[[Item], str],
    submit: Callable[[Item], PrefectFuture[Any]],
    *,
    poll_interval: float,
    rounds: int | None = None,
    until_idle: bool = False,
) -> Iterator[Any]:
    """The result of every task run that completed; a failed one is logged (its one-line message)."""
    logger = get_run_logger()
    stopping = threading.Event()
    done_rounds = 0
    with stop_on_signals(stopping.set):
        while not stopping.is_set() and (rounds is None or done_rounds < rounds):
            done_rounds += 1
            items = plan()
            first_per_lane: dict[str, Item] = {}
            for item in items:
                first_per_lane.setdefault(lane(item), item)
            running = [submit(item) for item in first_per_lane.values()]
            for future in running:
                future.wait()
                if future.state.is_completed():
                    yield future.result()
                else:
                    logger.error("%s", future.state.message)
            if not items:
                if until_idle:
                    return
                stopping.wait(poll_interval)
