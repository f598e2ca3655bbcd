"""The Prefect API a foreground command's flow run reports to, for as long as the command runs.

With PREFECT_API_URL unset, Prefect starts a temporary local server as a child process and stops it at
exit. A child of a command in a terminal is in the terminal's process group, so Ctrl-C reached the
server too: it was gone at once, while the run's last logs and events were still queued, and Prefect's
workers then tried to send them for about a minute before printing `--- Error logging to API ---`. Here
the temporary server is started with SIGINT blocked (a blocked signal stays blocked across exec), and
stopped only after the logs and events have been sent.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL

SENDING_TIMEOUT = 5.0  # seconds to send what is queued; an API that is gone holds the command no longer


@contextmanager
def prefect_api() -> Iterator[None]:
    """PREFECT_API_URL's API, or a temporary local one that Ctrl-C leaves to us; on leaving, what the
    run logged and emitted has been sent."""
    if PREFECT_API_URL.value():
        try:
            yield
        finally:
            send_logs_and_events()
        return
    from prefect.server.api.server import (
        SubprocessASGIServer,  # the server's modules only when one is needed
    )

    class TemporaryServer(SubprocessASGIServer):
        """Prefect's temporary server (Prefect's own clients find this instance: one per port, None here),
        started out of reach of the terminal's Ctrl-C."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                return super()._run_uvicorn_command()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    server = TemporaryServer()
    server.start()
    try:
        yield
    finally:
        send_logs_and_events()
        server.stop()


def send_logs_and_events() -> None:
    """Send the logs and events Prefect's workers still hold, waiting at most SENDING_TIMEOUT each."""
    APILogWorker.drain_all(timeout=SENDING_TIMEOUT)
    EventsWorker.drain_all(timeout=SENDING_TIMEOUT)
