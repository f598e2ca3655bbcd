"""The delivery ledger's vocabulary: a window as dispatch works on it and as a person is shown it, and an
agent's circuit as dispatch last left it. Shared by the DuckDB store of today and the control plane that
dispatch moves onto next, so both hand the same typed rows up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Window:
    """A window as dispatch works on it."""

    id: str
    agent: str
    state: str  # pending | sending | answered | silent | failed | quarantined | dropped
    size: int
    sent_at: datetime | None = None
    settled: bool | None = None
    retry_at: datetime | None = None  # a failed window is not sent again before then

    def unsettled(self) -> bool:
        """Sent, and not known to be over: Letta may still be answering it."""
        return self.sent_at is not None and (self.state == "sending" or (self.state == "failed" and not self.settled))

    def due(self, moment: datetime) -> bool:
        return self.retry_at is None or self.retry_at <= moment


@dataclass(frozen=True)
class WindowRecord:
    """A window as the ledger shows it to a person (`blipflow windows`)."""

    id: str
    agent: str
    state: str
    size: int
    created_at: datetime
    attempts: int
    failures: int
    error: str | None
    retry_at: datetime | None


@dataclass(frozen=True)
class Circuit:
    """An agent's circuit breaker as dispatch last left it."""

    state: str  # closed | open | half_open
    failures: int  # failed calls in a row
    opened_at: datetime | None
    reason: str | None  # the failure that opened it
