"""Live view of the stream (thought.stream's read-only mode): blips printed as they arrive, nothing stored
but the identity cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from blipflow.ingest.source import PassiveSink, Source
from blipflow.model.blip import Blip, Identity, parse_created_at
from blipflow.model.events import CommitEvent, Event
from blipflow.network.identity import IdentityResolver
from blipflow.process.detached import detached
from blipflow.process.shutdown import stop_on_signals


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

    async def watch(self, source: Source) -> None:
        """Show what `source` sends from now on, until SIGINT or SIGTERM (or the source gives up). Stopping
        waits for nothing a peer holds up: not an identity lookup in flight, nor, longer than the source's
        close timeout, the source's goodbye."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        with stop_on_signals(lambda: loop.call_soon_threadsafe(stopping.set)):
            reading = asyncio.create_task(source.run(self, None), name="monitor-read")
            showing = asyncio.create_task(self.show_forever(), name="monitor-show")
            stopped = asyncio.create_task(stopping.wait(), name="monitor-stop")
            try:
                done, _ = await asyncio.wait({reading, showing, stopped}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a source that gave up
            finally:
                for task in (reading, showing, stopped):
                    task.cancel()
                await asyncio.gather(reading, showing, stopped, return_exceptions=True)

    async def show_forever(self) -> None:
        while True:
            event = await self.queue.get()
            if not isinstance(event.record.get("content"), str):
                continue
            self.show(live_blip(event, await self.identity(event.did)))

    async def identity(self, did: str) -> Identity:
        """`did`'s identity as `IdentityResolver.resolve` finds it. The lookup over the network can hang on
        a slow directory or PDS, so a stopping monitor leaves it behind; the store's reads and writes it
        waits for, as the interpreter cannot safely abandon a thread inside DuckDB."""
        identities, stale = await asyncio.to_thread(self.resolver.cached, [did])
        if stale:
            fetched = await detached(self.resolver.fetch_all, stale, identities)
            await asyncio.to_thread(self.resolver.remember, fetched)
            identities.update(fetched)
        return identities[did]


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
