"""A circuit breaker per agent: after `failures_to_open` failed calls in a row — or at once when the agent
cannot be reached at all (a refused key, an unknown agent) — the agent is left alone for `cooldown`
seconds, then exactly one trial call decides whether it closes again or stays open."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]


@dataclass
class Breaker:
    agent: str
    failures_to_open: int = 5
    cooldown: float = 60.0
    state: State = "closed"
    failures: int = 0
    opened_at: float | None = None
    reason: str | None = None  # the failure that opened it last

    def restore(self, state: State, failures: int, opened_seconds_ago: float | None, reason: str | None,
                now: float) -> None:
        """Take up where an earlier process left this circuit."""
        self.state, self.failures, self.reason = state, failures, reason
        self.opened_at = None if opened_seconds_ago is None else now - opened_seconds_ago

    def allows(self, now: float) -> bool:
        if self.state == "open" and self.opened_at is not None and now - self.opened_at >= self.cooldown:
            self.state = "half_open"
            log.info("circuit for agent %s half-open: trying one call", self.agent)
        return self.state != "open"

    def succeeded(self) -> None:
        if self.state != "closed":
            log.info("circuit for agent %s closed again", self.agent)
        self.state, self.failures, self.opened_at, self.reason = "closed", 0, None, None

    def failed(self, now: float, reason: str, *, at_once: bool = False) -> bool:
        """Count a failed call; True when the circuit is open after it (the caller then stops calling).
        `at_once`: the failure says the agent cannot be reached at all, so more calls would fail alike."""
        self.failures += 1
        if at_once or self.state == "half_open" or self.failures >= self.failures_to_open:
            self.state, self.opened_at, self.reason = "open", now, reason
        return self.state == "open"
