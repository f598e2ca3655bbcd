"""Who waits for a store file: a process that finds the file locked says so while it retries, and a
process that keeps the file attached between its units of work (the long-running ingester) lets go of it
as soon as one does.

The saying-so is a shared `flock` on a file beside the store: the kernel drops it when the waiter gets
in, gives up or dies, so a crashed waiter never keeps the holder letting go for nothing.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Waiters:
    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".waiting")

    @contextmanager
    def announced(self) -> Iterator[None]:
        """While this process waits for the file."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def any(self) -> bool:
        """Whether another process waits for the file now (one open and one lock attempt: ~10 µs)."""
        try:
            descriptor = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)
        return False
