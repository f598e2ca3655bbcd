"""Stopping long-running loops gracefully on SIGTERM/SIGINT.

Ctrl-C (SIGINT) is a person asking a foreground run to finish: we stop reading, flush, and the run
simply ends, as a completed one. So is SIGTERM to a command run in the foreground (`blipflow run`,
`dispatch`, ...: what systemd, Docker or `kill` send): `as_a_command()` makes it so. Elsewhere SIGTERM is
ours only where nobody else handles it. Inside a flow run started by a worker or `blipflow serve`,
Prefect's own handler turns SIGTERM into an exception (TerminationSignal) after the runner has told the
run it is being cancelled — and tells the runner so only while its handler is in place — so there we
leave SIGTERM to Prefect: the exception unwinds the loops, whose `finally` blocks store what was
received, and Prefect records the run as Cancelled.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Foreground:
    """Whether a command run in the foreground holds SIGTERM (see `as_a_command`)."""

    command = False


@contextmanager
def as_a_command() -> Iterator[None]:
    """Within this block SIGTERM means what Ctrl-C does: stop gracefully. A loop under `stop_on_signals`
    takes both from whoever handles them (Prefect's flow engine too: no worker will cancel this run);
    anywhere else either raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    Foreground.command = True
    try:
        yield
    finally:
        Foreground.command = False
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Within this block SIGINT (and SIGTERM, in a command or if nobody else handles it) calls `stop()`;
    on leaving, a SIGTERM caught outside a command is raised again, for the default action.

    Works for asyncio loops too: asyncio wakes its loop for any signal, and the handler runs on the
    loop's (the main) thread."""
    if threading.current_thread() is not threading.main_thread():
        # Signals reach only the main thread; elsewhere cancellation arrives as CancelledError instead.
        yield
        return
    signals = [sig for sig in SIGNALS
               if sig == signal.SIGINT or Foreground.command or signal.getsignal(sig) in (signal.SIG_DFL, None)]
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in signals}
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

    for sig in signals:
        signal.signal(sig, on_signal)
    watching = watch_for_sigterm(stop) if signal.SIGTERM not in signals else None
    try:
        yield
    finally:
        restore()
        if watching is not None:
            watching()
        if caught == [signal.SIGTERM] and not Foreground.command:
            signal.raise_signal(signal.SIGTERM)


def watch_for_sigterm(stop: Callable[[], None]) -> Callable[[], None]:
    """Call `stop()` on SIGTERM without taking the signal from its handler; returns what ends the watch.

    Prefect's handler turns SIGTERM into an exception raised wherever the main thread happens to be — and
    one raised inside a garbage collector's callback is printed and dropped ("Exception ignored in ..."),
    which would leave the loop running until the worker kills it. The C-level handler also writes every
    signal to the wakeup fd, whatever the Python handler does, so a thread reading it sees each SIGTERM."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while received := reader.recv(64):
            if signal.SIGTERM in received:
                stop()

    threading.Thread(target=watch, name="blipflow-sigterm", daemon=True).start()

    def end() -> None:
        signal.set_wakeup_fd(previous)
        writer.close()  # the reader sees the end and returns
    return end
