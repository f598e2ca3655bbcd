"""The `blipflow` command.

Its imports take a second or more (Prefect, DuckDB, the Letta and ATProto clients), and one of the
libraries swallows a KeyboardInterrupt raised while it is being imported: a Ctrl-C in that second was
lost and the command went on. So the command holds SIGINT and SIGTERM while it starts, and a stop asked
for meanwhile ends it there, quietly, before anything has begun.
"""

from __future__ import annotations

import signal
import sys

STOPS = (signal.SIGINT, signal.SIGTERM)


def main() -> None:
    asked: list[int] = []
    previous = {stop: signal.signal(stop, lambda number, frame: asked.append(number)) for stop in STOPS}
    try:
        from cli.app import main as run
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    if asked:
        sys.exit(0)
    run()
