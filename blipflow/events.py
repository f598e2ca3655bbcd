"""Repository events, as every source (Jetstream, a PDS/relay firehose) hands them to ingest.

The shapes follow Jetstream v1: one event per repository operation, stamped with the source's
`time_us` clock, plus identity and account events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Operation = Literal["create", "update", "delete"]


@dataclass(slots=True, frozen=True)
class CommitEvent:
    did: str
    time_us: int
    operation: Operation
    collection: str
    rkey: str
    rev: str | None
    cid: str | None
    record: dict[str, Any] | None  # None for deletes
    raw: str | bytes = b""  # the event as Jetstream v1 JSON text; the store reads its columns from it

    @property
    def uri(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"


@dataclass(slots=True, frozen=True)
class IdentityEvent:
    did: str
    time_us: int
    handle: str | None


@dataclass(slots=True, frozen=True)
class AccountEvent:
    did: str
    time_us: int
    active: bool
    status: str | None


Event = CommitEvent | IdentityEvent | AccountEvent


class BadFrame(Exception):
    """A frame that is not a usable event. `reason` is a short stable word used as a counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
