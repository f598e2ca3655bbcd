"""What a source of events (Jetstream, a firehose) and the ingest that consumes them agree on."""

from __future__ import annotations

from typing import Protocol

from blipflow.model.events import BadFrame, Event


class SourceUnavailable(Exception):
    """No configured endpoint could be read; the message names them."""


class EventSink(Protocol):
    """Receives a source's events. `accept` and `reject` are synchronous so the read loop stays cheap;
    a source awaits `drain()` whenever `backlogged` is true, which is how slow storage pushes back."""

    backlogged: bool

    def accept(self, event: Event) -> None: ...

    def advance(self, position: int) -> None:
        """Everything up to `position`, the source's resumable cursor, has been handed over."""

    def reject(self, bad: BadFrame) -> None: ...

    def connected(self, endpoint: str) -> None: ...

    def disconnected(self, endpoint: str) -> None: ...

    async def drain(self) -> None: ...


class PassiveSink:
    """An EventSink that keeps no position and never pushes back; subclasses say what `accept` does."""

    backlogged = False

    def accept(self, event: Event) -> None:
        raise NotImplementedError

    def advance(self, position: int) -> None:
        pass

    def reject(self, bad: BadFrame) -> None:
        pass

    def connected(self, endpoint: str) -> None:
        pass

    def disconnected(self, endpoint: str) -> None:
        pass

    async def drain(self) -> None:
        pass


class Source(Protocol):
    """Reads events forever, from `cursor` (None: only what happens from now on)."""

    @property
    def cursor_key(self) -> str:
        """The name its position is stored under."""

    @property
    def first_cursor(self) -> int | None:
        """Where ingest starts when nothing is stored yet."""

    async def run(self, sink: EventSink, cursor: int | None) -> None: ...

