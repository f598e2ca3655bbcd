"""Long-running work in lanes: items of one lane (an account, an agent) go one at a time and in order,
lanes go side by side, and a lane that is stuck — its peer away, its task waiting to retry — holds up
no other. With nothing to start or finish, planning looks again every poll interval.

Prefect sees the work in one of two ways. `results_in_lanes` makes each item a task run of its own:
right where items are few (an account posts a few replies a minute). `results_in_rounds` makes each
stretch of a lane's work a task run — a round — that takes the lane's items one after another while
planning has the next ready when the last is done, and reports each one's result as it is done: a local
Prefect server records some 30 task runs a second, fewer than a hundred agents' windows, while a round
costs it one task run however many items it takes. When items come slowly each round has one, as a
task run per item would; when they come fast, rounds grow and Prefect keeps up.

SIGTERM or Ctrl-C starts nothing more and lets the running items finish.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.futures import PrefectConcurrentFuture

from blipflow.process.shutdown import stop_on_signals
from tasks.rounds import PATIENCE, Handover, Round

Item = TypeVar("Item")


def results_in_lanes(
    plan: Callable[[], Sequence[Item]],
    lane: Callable[[Item], str],
    submit: Callable[[Item], PrefectConcurrentFuture[Any]],
    *,
    poll_interval: float,
    until_idle: bool = False,
) -> Iterator[Any]:
    """One task run per item: the result of every task run that completed, as it completes (a failed
    one is already in the log, once: the task run's `Finished in state Failed(…)` line)."""
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


def results_in_rounds(
    plan: Callable[[frozenset[str]], Sequence[Item]],
    lane: Callable[[Item], str],
    submit: Callable[[Round[Item]], PrefectConcurrentFuture[Any]],
    *,
    poll_interval: float,
    until_idle: bool = False,
    take: Callable[[str], Item | None] | None = None,
) -> Iterator[Any]:
    """One task run per round of a lane's items: each item's result, as its round reports it (a round
    that failed is already in the log, once: its task run's `Finished in state Failed(…)` line).
    `take(lane)`: the lane's next item if one is ready, for a round to take itself when it is done with
    the last (planning, which looks at every lane, hands over only what a round could not take).
    `plan(lanes_busy)`: the items ready now, leaving alone the lanes whose rounds take their own."""
    stopping = threading.Event()
    wake = threading.Event()
    reported: queue.SimpleQueue[Any] = queue.SimpleQueue()
    rounds: dict[str, tuple[Handover, PrefectConcurrentFuture[Any]]] = {}

    def start(key: str, item: Item) -> tuple[Handover, PrefectConcurrentFuture[Any]]:
        handover = Handover(reported.put, wake.set, None if take is None else lambda: take(key))
        future = submit(Round(key, item, handover))
        future.wrapped_future.add_done_callback(lambda _: wake.set())
        return handover, future

    def results() -> Iterator[Any]:
        while not reported.empty():
            yield reported.get()

    def stop() -> None:
        stopping.set()
        wake.set()

    with stop_on_signals(stop):
        get_run_logger().info("looking for work every %s s until stopped", poll_interval)
        try:
            while not stopping.is_set():
                wake.clear()
                for key in [key for key, (_, future) in rounds.items() if future.wrapped_future.done()]:
                    del rounds[key]
                waiting = {key: handover for key, (handover, _) in rounds.items() if handover.waiting.is_set()}
                busy = frozenset(rounds.keys() - waiting.keys()) if take is not None else frozenset()
                for item in plan(busy):
                    key = lane(item)  # items come oldest first: the lane's next one
                    if key not in rounds:
                        rounds[key] = start(key, item)
                    elif key in waiting:
                        waiting.pop(key).give(item)
                for handover in waiting.values():  # nothing ready for their lanes for a while: those rounds end
                    if time.monotonic() - handover.asked_at >= PATIENCE:
                        handover.give(None)
                yield from results()
                if not rounds and until_idle:
                    return
                wake.wait(poll_interval)
        finally:
            for handover, _ in rounds.values():  # the running items finish; no round takes another
                handover.close()
        concurrent.futures.wait([future.wrapped_future for _, future in rounds.values()])
        yield from results()
