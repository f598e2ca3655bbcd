"""A round: one lane's items (an agent's windows) for one task run, taken one after another as the
long-running loop of flows.lanes hands them over, each one's result reported as it is done."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
ROUND_SECONDS = 60.0  # a round takes no new item after this long: its task run ends and shows what it did
# Seconds a round waits for planning to have its lane's next item. Planning skips a look when the store
# seems unchanged (a file's size and time, which two quick writes may leave alike) and looks anyway
# after a second (the dispatcher's REPLAN_EVERY): a round that waits that long has had a real look.
PATIENCE = 1.0


class Round(Generic[Item]):
    """One lane's items for one task run: the first, then each next one that planning has ready when the
    round asks for it — none once the round is ROUND_SECONDS old or the run stops. A round made alone
    (no `handed_over`) takes its first item only.

    The task takes them from `items()` and tells `done(result)` of each. A task run that fails on an
    item and is retried takes that item again, and no other: every item has the task's retries to itself,
    as a task run of its own would."""

    def __init__(self, lane: str, first: Item, handed_over: Handover | None = None) -> None:
        self.lane = lane
        self.first = first
        self.results: list[Any] = []  # of this round's items, across the task run's retries
        self.failed_on: Item | None = None  # the item the last attempt raised on
        self.handover = handed_over
        self.ends_at = time.monotonic() + ROUND_SECONDS

    def items(self) -> Iterator[Item]:
        retry = self.failed_on is not None
        item = self.failed_on if retry else self.first
        while item is not None:
            self.failed_on = item  # until the task comes back for the next one: it did not raise
            yield item
            self.failed_on = None
            if retry or self.handover is None or time.monotonic() >= self.ends_at:
                return
            item = self.handover.next()

    def done(self, result: Any) -> None:
        self.results.append(result)
        if self.handover is not None:
            self.handover.report(result)


class Handover:
    """Where a round waits for its lane's next item, and planning hands it over — or None, when planning
    that began after the round asked has had nothing for the lane for PATIENCE seconds: the round ends
    then. Planning hands an item only to a round that was already waiting when it began, so the round
    never gets again an item it finished while planning looked."""

    def __init__(self, report: Callable[[Any], None], wake: Callable[[], None],
                 take: Callable[[], Any] | None = None) -> None:
        self.report = report  # a result, to the run's loop
        self.wake = wake  # the run's loop, to plan now
        self.take = take  # the lane's next item, if one is ready, taken in the round's own thread
        self.waiting = threading.Event()
        self.asked_at = 0.0  # monotonic: when the round last asked
        self.handed: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.closed = False

    def next(self) -> Any:
        """The lane's next item, or None: nothing ready, or the run's loop is over. Taken at once when the
        lane can take it itself; else planning hands it over."""
        if self.take is not None and not self.closed:
            item = self.take()
            if item is not None:
                return item
        with self.lock:
            if self.closed:
                return None
            self.asked_at = time.monotonic()
            self.waiting.set()
        self.wake()
        return self.handed.get()

    def give(self, item: Any) -> None:
        """Hand `item` (None: nothing more) to the round, which is waiting."""
        with self.lock:
            self.waiting.clear()
            self.handed.put(item)

    def close(self) -> None:
        """Nothing more for the round, now or when it asks."""
        with self.lock:
            self.closed = True
            if self.waiting.is_set():
                self.waiting.clear()
                self.handed.put(None)
