"""Writes committed together: the small writes that many threads of one process make at once (a hundred
agents' lanes opening, marking and finishing windows) go into one transaction and one commit.

SQLite takes one writer at a time. Each thread writing in a transaction of its own took the write turn
and then, a hundred threads sharing the GIL, waited for the interpreter between each step of it: the turn
was held some 7 ms for a write of under 1 ms, and a lane waited 250 ms for each of its three writes a
window. Here one writer thread takes every write waiting at that moment, runs each in a savepoint of one
transaction, and commits once (syncing the log once, if any of them asked to be durable). Each caller
still gets its own result or its own error, as it would from a transaction of its own: a write that fails
leaves no trace and the others are kept; a commit that fails fails every write of the group.

The writer thread is started by the first write and ends after IDLE_SECONDS without one; a forked child
starts its own (its parent's is not in it).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")
IDLE_SECONDS = 1.0


@dataclass
class Write(Generic[T]):
    """One caller's write, waiting for the writer thread to commit it."""

    work: Callable[[Connection], T]
    durable: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class WritesTogether:
    """Commits the writes handed to `write` in groups, through `transaction(durable)`: a writing connection
    in a transaction, committed when its context ends."""

    def __init__(self, transaction: Callable[[bool], AbstractContextManager[Connection]]) -> None:
        self._transaction = transaction
        self._waiting: queue.SimpleQueue[Write[Any]] = queue.SimpleQueue()
        self._mutex = threading.Lock()
        self._writer: threading.Thread | None = None
        self._writer_pid = 0

    def write(self, work: Callable[[Connection], T], *, durable: bool = True) -> T:
        """`work(connection)`, committed (with whatever else is waiting) before this returns; its result, or
        its error raised here."""
        request: Write[T] = Write(work, durable)
        with self._mutex:
            self._waiting.put(request)
            if self._writer is None or self._writer_pid != os.getpid():
                self._writer = threading.Thread(target=self._run, name="blipflow-writer", daemon=True)
                self._writer_pid = os.getpid()
                self._writer.start()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]

    def _run(self) -> None:
        while True:
            try:
                first = self._waiting.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._mutex:  # a write handed over meanwhile finds no writer and starts one
                    if self._waiting.empty():
                        self._writer = None
                        return
                continue
            group = [first]
            while True:
                try:
                    group.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            self._commit(group)

    def _commit(self, group: list[Write[Any]]) -> None:
        try:
            with self._transaction(any(write.durable for write in group)) as connection:
                for number, write in enumerate(group):
                    # A savepoint in the database's own words: SQLAlchemy's begin_nested cost four times the
                    # write it kept. None is released: the commit releases them all, and one is rolled back
                    # to, if at all, before the next is taken.
                    connection.exec_driver_sql(f"SAVEPOINT write_{number}")
                    try:
                        write.result = write.work(connection)
                    except Exception as error:  # noqa: BLE001 - the caller's to handle, in its own thread
                        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT write_{number}")
                        write.error = error
        except Exception as error:  # noqa: BLE001 - begin or commit failed: nothing of the group was written
            for write in group:
                if write.error is None:
                    write.result, write.error = None, error
        finally:
            for write in group:
                write.done.set()
