"""Notices: what happened that people may want to watch or act on — a source connected or lost, an
agent's circuit opened or closed, a reply published, how much was ingested lately.

The library only hands notices to a `Notify` callable; the Prefect layer turns them into Prefect events
(with the agent, DID or source as the resource) so that users can build automations on them. Never one
notice per blip: ingest reports its progress in batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Notice:
    event: str  # e.g. "blipflow.agent.circuit.opened"
    resource: str  # e.g. "blipflow.agent.scout", "blipflow.source.jetstream"
    payload: dict[str, Any] = field(default_factory=dict)


Notify = Callable[[Notice], None]


def nobody(notice: Notice) -> None:
    """Where notices go when nothing listens."""


def agent_resource(name: str) -> str:
    return f"blipflow.agent.{name}"


def source_resource(cursor_key: str) -> str:
    """A source's one resource id in every notice, whichever of its endpoints it is connected to: named by
    what its position is stored under (`jetstream`, `firehose:wss://…`)."""
    return f"blipflow.source.{cursor_key}"
