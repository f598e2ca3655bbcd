"""Live view of the stream (thought.stream's read-only mode): blips printed as they arrive, nothing stored
but the identity cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from blipflow.blip import Blip
from blipflow.events import CommitEvent, Event
from blipflow.identity import IdentityResolver
from blipflow.source import PassiveSink


class MonitorSink(PassiveSink):
    """Shows each new blip through `show`, its author resolved to a handle. Bad frames are ignored
    here: counting them is the ingest flow's job."""

    def __init__(self, resolver: IdentityResolver, show: Callable[[Blip], None]) -> None:
        self.resolver = resolver
        self.show = show
        self.queue: asyncio.Queue[CommitEvent] = asyncio.Queue()

    def accept(self, event: Event) -> None:
        if isinstance(event, CommitEvent) and event.operation == "create" and event.record is not None:
            self.queue.put_nowait(event)

    async def show_forever(self) -> None:
        while True:
            event = await self.queue.get()
            content = event.record.get("content") if event.record else None
            if not isinstance(content, str):
                continue
            identity = (await asyncio.to_thread(self.resolver.resolve, [event.did]))[event.did]
            created = event.record.get("createdAt") if event.record else None
            self.show(
                Blip(
                    uri=event.uri,
                    did=event.did,
                    handle=identity.handle,
                    display_name=identity.display_name,
                    time_us=event.time_us,
                    created_at=parse_created_at(created),
                    content=content,
                )
            )


def parse_created_at(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
