"""A circuit breaker per agent: after `failures_to_open` failed calls in a row the agent is left alone for
`cooldown` seconds, then one trial call decides whether it closes again or stays open."""

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

    def restore(self, state: State, failures: int, opened_seconds_ago: float | None, now: float) -> None:
        """Take up where an earlier process left this circuit."""
        self.state, self.failures = state, failures
        self.opened_at = None if opened_seconds_ago is None else now - opened_seconds_ago

    def allows(self, now: float) -> bool:
        if self.state == "open" and self.opened_at is not None and now - self.opened_at >= self.cooldown:
            self.state = "half_open"
            log.info("circuit for agent %s half-open: trying one call", self.agent)
        return self.state != "open"

    def succeeded(self) -> None:
        if self.state != "closed":
            log.info("circuit for agent %s closed again", self.agent)
        self.state, self.failures, self.opened_at = "closed", 0, None

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.state == "half_open" or (self.state == "closed" and self.failures >= self.failures_to_open):
            self.state, self.opened_at = "open", now
            log.warning("circuit for agent %s open after %d failed calls; next try in %g s",
                        self.agent, self.failures, self.cooldown)
