"""What a failed unit of work tells whoever may run it again: whether trying again later can help.

Dispatch (a Letta call) and publish (a PDS request) fail the same two ways — the peer is away or busy
(timeouts, lost connections, 429, 5xx), or it refused for good (bad credentials, an unknown agent, a
rejected record) — so one retry condition (`tasks.retries`) serves both. A request that cannot work at
all (a bad option) is a BadRequest: nothing to retry, one line to the person who made it.
"""

from __future__ import annotations


class Failure(Exception):
    """A failure whose message is one line naming the thing that failed; `transient`: a retry may work."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class BadRequest(ValueError):
    """Something asked for (a command-line option, a flow parameter) in a way that cannot work; the message is
    one line naming the option."""
