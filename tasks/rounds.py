"""A round: one lane's items (an agent's windows) for one task run, taken one after another as the
long-running loop of flows.lanes hands them over, each one's result reported as it is done."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
LINGER = 2.0  # seconds a round waits for its lane's next item before it ends
ROUND_SECONDS = 60.0  # a round takes no new item after this long: its task run ends and shows what it did


class Round(Generic[Item]):
    """One lane's items for one task run: the first, then each next one that planning hands over while
    the round waits for it — at most LINGER seconds, and none once the round is ROUND_SECONDS old or the
    run stops. A round made alone (no `handed_over`) takes its first item only.

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
    """Where a round waits for its lane's next item, and planning hands it over. Planning hands an item
    only to a round that was already waiting when planning began, so the round never gets again an item
    it finished while planning looked."""

    def __init__(self, report: Callable[[Any], None], wake: Callable[[], None], stopping: threading.Event) -> None:
        self.report = report  # a result, to the run's loop
        self.wake = wake  # the run's loop, to plan now
        self.stopping = stopping
        self.lock = threading.Lock()
        self.waiting = False
        self.handed: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def next(self) -> Any:
        """The lane's next item, or None when none came within LINGER seconds or the run is stopping."""
        with self.lock:
            if self.stopping.is_set():
                return None
            self.waiting = True
        self.wake()
        try:
            return self.handed.get(timeout=LINGER)
        except queue.Empty:
            with self.lock:
                if self.waiting:  # nothing came: the round ends
                    self.waiting = False
                    return None
            return self.handed.get_nowait()  # handed over as the wait ended

    def give(self, item: Any) -> bool:
        """Hand `item` (None: nothing more) to the round if it is waiting."""
        with self.lock:
            if not self.waiting:
                return False
            self.waiting = False
            self.handed.put(item)
            return True
