"""Long-running work in lanes: items of one lane (an account, an agent) go one at a time and in order,
lanes go side by side, and a lane that is stuck — its peer away, its task waiting to retry — holds up
no other. Whenever a lane is free, the first item planned for it starts as a Prefect task run; with
nothing to start or finish, planning looks again every poll interval.

SIGTERM or Ctrl-C starts nothing more and lets the running items finish.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.futures import PrefectConcurrentFuture

from blipflow.process.shutdown import stop_on_signals

Item = TypeVar("Item")


def results_in_lanes(
    plan: Callable[[], Sequence[Item]],
    lane: Callable[[Item], str],
    submit: Callable[[Item], PrefectConcurrentFuture[Any]],
    *,
    poll_interval: float,
    until_idle: bool = False,
) -> Iterator[Any]:
    """The result of every task run that completed, as it completes (a failed one is already in the log,
    once: the task run's `Finished in state Failed(…)` line)."""
    stopping = threading.Event()
    running: dict[str, PrefectConcurrentFuture[Any]] = {}

    def finished(futures: list[PrefectConcurrentFuture[Any]]) -> Iterator[Any]:
        for future in futures:
            future.wait()
            if future.state.is_completed():
                yield future.result()

    with stop_on_signals(stopping.set):
        get_run_logger().info("looking for work every %s s until stopped", poll_interval)
        while not stopping.is_set():
            for item in plan():
                if lane(item) not in running:  # items come oldest first: the lane's next one
                    running[lane(item)] = submit(item)
            if not running:
                if until_idle:
                    return
                stopping.wait(poll_interval)
                continue
            done, _ = concurrent.futures.wait([future.wrapped_future for future in running.values()],
                                              timeout=poll_interval, return_when=concurrent.futures.FIRST_COMPLETED)
            ended = [key for key, future in running.items() if future.wrapped_future in done]
            yield from finished([running.pop(key) for key in ended])
        yield from finished(list(running.values()))
