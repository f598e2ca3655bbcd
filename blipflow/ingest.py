"""Ingest: every event from a source into the store, in batches, resumable, never stopped by bad input.

Events collect in memory and go to the store together with the source position they reach, in one
transaction, from a worker thread (DuckDB releases the GIL, so reading the socket goes on meanwhile).
The stored cursor therefore never runs ahead of the stored blips: whatever moment the process dies,
a restart replays from the cursor (minus the rewind) and the idempotent upserts drop the overlap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from blipflow.blip import BlipRow, blip_row
from blipflow.config import IngestConfig, Settings
from blipflow.events import AccountEvent, BadFrame, CommitEvent, Event
from blipflow.notices import Notice, Notify, nobody, source_resource
from blipflow.shutdown import stop_on_signals
from blipflow.firehose import FirehoseSource
from blipflow.jetstream import JetstreamSource
from blipflow.source import Source
from blipflow.store import IngestBatch, Store, StoreBusy

log = logging.getLogger(__name__)

BAD_FRAME_LOG_INTERVAL = 10.0  # seconds between log lines for one kind of bad frame


@dataclass
class Pending:
    """What has been received and not yet handed to the store."""

    blips: dict[str, BlipRow] = field(default_factory=dict)
    handles: dict[str, str | None] = field(default_factory=dict)
    accounts: dict[str, tuple[bool, str | None]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    position: int | None = None
    events: int = 0
    since: float = 0.0  # monotonic time of the first event held

    def take_back(self, older: Pending) -> None:
        """Put an unwritten batch back in front of what arrived after it (later operations still win)."""
        self.blips = {**older.blips, **self.blips}
        self.handles = {**older.handles, **self.handles}
        self.accounts = {**older.accounts, **self.accounts}
        self.counters = older.counters + self.counters
        self.position = self.position if self.position is not None else older.position
        self.events += older.events
        self.since = older.since or self.since

    def batch(self, cursor_key: str) -> IngestBatch:
        return IngestBatch(
            blips=self.blips,
            handles=self.handles,
            accounts=self.accounts,
            counters=self.counters,
            cursor_key=cursor_key,
            cursor=self.position,
        )


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    bad: int = 0
    flushes: int = 0
    store_retries: int = 0
    connects: int = 0
    disconnects: int = 0
    last_time_us: int | None = None
    last_flush_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def progress_since(self, earlier: IngestStats, seconds: float) -> dict[str, float | int | None]:
        """The figures of a progress report: totals, and what changed since `earlier` over `seconds`."""
        lag = self.lag_seconds()
        return {
            "events": self.received - earlier.received,
            "stored": self.stored - earlier.stored,
            "bad": self.bad - earlier.bad,
            "events_per_second": round((self.received - earlier.received) / seconds, 2) if seconds > 0 else None,
            "lag_seconds": None if lag is None else round(lag, 1),
            "connects": self.connects,
            "disconnects": self.disconnects,
            "store_retries": self.store_retries,
            "received_total": self.received,
            "stored_total": self.stored,
            "bad_total": self.bad,
        }

    def lag_seconds(self) -> float | None:
        """How far the newest event received trails the wall clock (source clocks are wall clocks)."""
        if self.last_time_us is None:
            return None
        return max(0.0, time.time() - self.last_time_us / 1e6)


class Ingestor:
    """Consumes a source (as its EventSink) and writes to the store."""

    def __init__(self, store: Store, source: Source, config: IngestConfig, notify: Notify = nobody) -> None:
        self.store = store
        self.source = source
        self.config = config
        self.notify = notify
        self.stats = IngestStats()
        self.reported = (IngestStats(), time.monotonic())  # the stats at the last progress report, and when
        self.pending = Pending()
        self.backlogged = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blipflow-store")
        self._writing: Future[None] | None = None
        self._failed: tuple[Pending, BaseException] | None = None
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bad_logged: dict[str, tuple[float, int]] = {}

    # -- EventSink -------------------------------------------------------------------------------

    def accept(self, event: Event) -> None:
        pending = self.pending
        if not pending.events:
            pending.since = time.monotonic()
        pending.events += 1
        self.stats.received += 1
        self.stats.last_time_us = event.time_us
        if isinstance(event, CommitEvent):
            try:
                row = blip_row(event, max_content_bytes=self.config.max_content_bytes)
            except BadFrame as bad:
                self.reject(bad)
                return
            held = pending.blips.get(row[0])
            if held is None or held[1] <= row[1]:  # a rewind replays older operations: the later one wins
                pending.blips[row[0]] = row
        elif isinstance(event, AccountEvent):
            pending.accounts[event.did] = (event.active, event.status)
        else:
            pending.handles[event.did] = event.handle

    def advance(self, position: int) -> None:
        """The source has handed over everything up to `position` (its resumable cursor)."""
        self.pending.position = position
        if self._writing is None and (
            self.pending.events >= self.config.flush_max_events
            or time.monotonic() - self.pending.since >= self.config.flush_interval
        ):
            self.flush()
        self.backlogged = self.pending.events >= 4 * self.config.flush_max_events

    def reject(self, bad: BadFrame) -> None:
        self.stats.bad += 1
        self.pending.counters[f"ingest.bad.{bad.reason}"] += 1
        now = time.monotonic()
        last, suppressed = self._bad_logged.get(bad.reason, (now - BAD_FRAME_LOG_INTERVAL, 0))
        if now - last >= BAD_FRAME_LOG_INTERVAL:
            more = f" ({suppressed} more like it since the last report)" if suppressed else ""
            log.warning("skipped a bad event, %s%s", bad, more)
            self._bad_logged[bad.reason] = (now, 0)
        else:
            self._bad_logged[bad.reason] = (last, suppressed + 1)

    def connected(self, endpoint: str) -> None:
        self.stats.connects += 1
        self.pending.counters["ingest.connects"] += 1
        log.info("ingest connected to %s", endpoint)
        self.notify(Notice("blipflow.ingest.connected", source_resource(endpoint), {"source": self.source.cursor_key}))

    def disconnected(self, endpoint: str) -> None:
        self.stats.disconnects += 1
        self.pending.counters["ingest.disconnects"] += 1
        log.info("ingest disconnected from %s", endpoint)
        self.notify(Notice("blipflow.ingest.disconnected", source_resource(endpoint), {"source": self.source.cursor_key}))

    def report_progress(self) -> None:
        """One notice with what was ingested since the last one (never one per blip)."""
        earlier, when = self.reported
        now = time.monotonic()
        progress = self.stats.progress_since(earlier, now - when)
        self.reported = (IngestStats(**vars(self.stats)), now)
        self.notify(Notice("blipflow.ingest.progress", source_resource(self.source.cursor_key), progress))

    async def drain(self) -> None:
        """Wait until the store has caught up with what is held in memory."""
        while self.backlogged:
            if self._writing is None:
                self.flush()
            writing = self._writing
            if writing is not None:
                await asyncio.wait([asyncio.wrap_future(writing)])
            self._recover_failed_write()
            self.backlogged = self.pending.events >= 4 * self.config.flush_max_events

    # -- writing ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand what is pending to the writer thread (one write at a time)."""
        if self._writing is not None or not (self.pending.events or self.pending.counters):
            return
        if self._failed is not None:  # the failed batch goes first, once taken back (older rows must not win)
            return
        taken, self.pending = self.pending, Pending()
        self._writing = self._writer.submit(self._write, taken)
        self._writing.add_done_callback(lambda future: self._written(taken, future))

    def _write(self, taken: Pending) -> None:
        started = time.monotonic()
        counters = taken.counters.copy()
        counters["ingest.events"] += taken.events
        counters["ingest.blips_written"] += len(taken.blips)
        batch = taken.batch(self.source.cursor_key)
        batch.counters = counters
        self.store.apply(batch)
        self.stats.last_flush_seconds = time.monotonic() - started

    def _written(self, taken: Pending, future: Future[None]) -> None:
        # Runs on the writer thread; the event loop reads only the plain fields it sets.
        error = future.exception()
        if error is None:
            self.stats.stored += taken.events
            self.stats.flushes += 1
        else:
            self.stats.store_retries += 1
            self._failed = (taken, error)
        self._writing = None

    def _recover_failed_write(self) -> None:
        if self._failed is None:
            return
        taken, error = self._failed
        self._failed = None
        if not isinstance(error, StoreBusy):
            raise error
        log.warning("%s; keeping %d events in memory and trying again", error, taken.events)
        self.pending.take_back(taken)

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Ingest until `stop()` (or the source gives up); flushes everything received before returning."""
        self._loop = asyncio.get_running_loop()
        stored = await asyncio.to_thread(self.store.cursor, self.source.cursor_key)
        cursor = stored if stored is not None else self.source.first_cursor
        log.info("ingest starting from %s cursor %s", self.source.cursor_key, cursor)
        reading = asyncio.create_task(self.source.run(self, cursor), name="ingest-read")
        ticking = asyncio.create_task(self._tick(), name="ingest-tick")
        stopping = asyncio.create_task(self._stop.wait(), name="ingest-stop")
        try:
            done, _ = await asyncio.wait({reading, ticking, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping:
                    task.result()  # a source that gave up, or a store that failed for good
        finally:
            for task in (reading, ticking, stopping):
                task.cancel()
            await asyncio.gather(reading, ticking, stopping, return_exceptions=True)
            self.flush_everything()
            self.report_progress()

    def stop(self) -> None:
        """From any thread (a signal watcher's, say)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval / 2)
            self._recover_failed_write()
            if self._writing is None and self.pending.events:
                if time.monotonic() - self.pending.since >= self.config.flush_interval:
                    self.flush()
            if time.monotonic() - self.reported[1] >= self.config.report_interval:
                await asyncio.to_thread(self.report_progress)  # a listener may call out over the network

    def flush_everything(self) -> None:
        """Blocking: wait for the write in flight, then write what is left. Used on the way out."""
        if self._writing is not None:
            try:
                self._writing.result()
            except BaseException:  # noqa: BLE001 - recovered below, like any failed write
                pass
        if self._failed is not None:
            taken, _ = self._failed
            self._failed = None
            self.pending.take_back(taken)
        if self.pending.events or self.pending.counters:
            taken, self.pending = self.pending, Pending()
            self._write(taken)
            self.stats.stored += taken.events
            self.stats.flushes += 1
        self._writer.shutdown(wait=True)


SOURCE_NAMES = ("jetstream", "firehose")


def make_source(settings: Settings, name: str) -> Source:
    """The configured source called `name`: Jetstream (default) or the PDS/relay firehose."""
    if name == "jetstream":
        return JetstreamSource(settings.jetstream, max_frame_bytes=settings.ingest.max_frame_bytes)
    if name == "firehose":
        return FirehoseSource(
            settings.bluesky.pds_uri,
            wanted_collections=settings.jetstream.wanted_collections,
            wanted_dids=settings.jetstream.wanted_dids,
        )
    raise ValueError(f"unknown source {name!r}: expected one of {', '.join(SOURCE_NAMES)}")


async def run_ingest(settings: Settings, source_name: str = "jetstream", notify: Notify = nobody) -> IngestStats:
    """Ingest from the named source until SIGTERM/SIGINT or cancellation; everything received is stored."""
    store = Store.from_config(settings.store)
    ingestor = Ingestor(store, make_source(settings, source_name), settings.ingest, notify)
    with stop_on_signals(ingestor.stop):
        try:
            await ingestor.run()
        finally:
            stats = ingestor.stats
            log.info("ingest stopped: %d events received, %d stored, %d bad", stats.received, stats.stored, stats.bad)
    return ingestor.stats
