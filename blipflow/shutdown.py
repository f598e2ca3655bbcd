"""Stopping long-running loops gracefully on SIGTERM/SIGINT.

A Prefect worker cancels a flow run by sending SIGTERM to its process, and Prefect turns that signal
into the run's Cancelled state. So we first stop reading and flush, then hand SIGTERM back to whoever
handled it before. Ctrl-C (SIGINT) is a person asking a foreground run to finish: once everything is
flushed the run simply ends, as a completed one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Within this block SIGTERM/SIGINT call `stop()`; on leaving, a caught SIGTERM is re-raised.

    Works for asyncio loops too: asyncio wakes its loop for any signal, and the handler runs on the
    loop's (the main) thread."""
    if threading.current_thread() is not threading.main_thread():
        # Signals reach only the main thread; elsewhere cancellation arrives as CancelledError instead.
        yield
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    caught: list[int] = []

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def on_signal(sig: int, frame: FrameType | None) -> None:
        caught.append(sig)
        if len(caught) == 1:
            stop()
        else:  # a second signal: stop waiting for the graceful path
            restore()
            signal.raise_signal(sig)

    for sig in SIGNALS:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        restore()
        if caught == [signal.SIGTERM]:
            signal.raise_signal(signal.SIGTERM)
