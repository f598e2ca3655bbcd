"""Live view of the stream (thought.stream's read-only mode): blips printed as they arrive, nothing stored
but the identity cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from blipflow.ingest.source import PassiveSink
from blipflow.model.blip import Blip, Identity, parse_created_at
from blipflow.model.events import CommitEvent, Event
from blipflow.network.identity import IdentityResolver


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
            if not isinstance(event.record.get("content"), str):
                continue
            identity = (await asyncio.to_thread(self.resolver.resolve, [event.did]))[event.did]
            self.show(live_blip(event, identity))


def live_blip(event: CommitEvent, identity: Identity) -> Blip:
    """A created blip as the monitor shows it, read as ingest stores it (a createdAt that is not a
    readable date is no date)."""
    return Blip(
        uri=event.uri,
        did=event.did,
        handle=identity.handle,
        display_name=identity.display_name,
        time_us=event.time_us,
        created_at=parse_created_at(event.record.get("createdAt")),
        content=event.record["content"],
    )
