"""Ingest: every event from a source into the store, in batches, resumable, never stopped by bad input.

Events collect in memory and go to the store together with the source position they reach, in one
transaction, from a worker thread (DuckDB releases the GIL, so reading the socket goes on meanwhile).
The stored cursor therefore never runs ahead of the stored blips: whatever moment the process dies,
a restart replays from the cursor (minus the rewind) and the idempotent upserts drop the overlap.

Memory is bounded by the batch size, not by how far the store falls behind: while one batch is being
written, the next collects up to `flush_max_events`, and then the source waits (`backlogged`) until
the writer takes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from blipflow.config import IngestConfig, Settings
from blipflow.control.engine import ControlPlane
from blipflow.ingest.feed import Feed
from blipflow.ingest.jetstream import JetstreamSource
from blipflow.ingest.source import Source
from blipflow.model.blip import BlipRow, blip_row
from blipflow.model.events import AccountEvent, BadFrame, CommitEvent, Event
from blipflow.model.failures import BadRequest
from blipflow.model.moments import parse_moment
from blipflow.model.notices import Notice, Notify, nobody, source_resource
from blipflow.process.collector import collector_spares_what_is_already_there
from blipflow.process.shutdown import stop_on_signals
from blipflow.store.history import IngestBatch, Store, StoreBusy

log = logging.getLogger(__name__)

BAD_FRAME_LOG_INTERVAL = 10.0  # seconds between log lines for one kind of bad frame


@dataclass(slots=True)  # one per event received: not frozen, which would double its cost (~0.2 µs)
class Arrival:
    """An event's own time (the source clock, wall-clock microseconds) and when it reached us (epoch seconds).

    The difference is how far behind the stream ingest was at that moment; on a quiet stream it stays what
    it was, while the time since the arrival grows."""

    time_us: int
    received_at: float

    def lag_seconds(self) -> float:
        return max(0.0, self.received_at - self.time_us / 1e6)


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
    newest: Arrival | None = None  # the last event held, for the lag the store keeps

    def take_back(self, older: Pending) -> None:
        """Put an unwritten batch back in front of what arrived after it (later operations still win)."""
        self.blips = {**older.blips, **self.blips}
        self.handles = {**older.handles, **self.handles}
        self.accounts = {**older.accounts, **self.accounts}
        self.counters = older.counters + self.counters
        self.position = self.position if self.position is not None else older.position
        self.events += older.events
        self.since = older.since or self.since
        self.newest = self.newest or older.newest

    def batch(self, cursor_key: str) -> IngestBatch:
        return IngestBatch(
            blips=self.blips,
            handles=self.handles,
            accounts=self.accounts,
            counters=self.counters,
            cursor_key=cursor_key,
            cursor=self.position,
            newest_time_us=None if self.newest is None else self.newest.time_us,
            newest_received_at=None if self.newest is None else self.newest.received_at,
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
    newest: Arrival | None = None
    last_flush_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def progress_since(self, earlier: IngestStats, seconds: float) -> dict[str, float | int | None]:
        """The figures of a progress report: totals, and what changed since `earlier` over `seconds`.

        The lag is the last event's, measured when it arrived, and only when events arrived since `earlier`:
        a quiet stream is not a stream ingest is behind."""
        events = self.received - earlier.received
        arrived = self.newest if events else None
        return {
            "events": events,
            "stored": self.stored - earlier.stored,
            "bad": self.bad - earlier.bad,
            "events_per_second": round(events / seconds, 2) if seconds > 0 else None,
            "lag_seconds": None if arrived is None else round(arrived.lag_seconds(), 1),
            "last_event_seconds_ago": None if self.newest is None else round(time.time() - self.newest.received_at, 1),
            "connects": self.connects,
            "disconnects": self.disconnects,
            "store_retries": self.store_retries,
            "received_total": self.received,
            "stored_total": self.stored,
            "bad_total": self.bad,
        }


class Ingestor:
    """Consumes a source (as its EventSink) and writes to the store."""

    def __init__(self, store: Store, source: Source, config: IngestConfig, notify: Notify = nobody,
                 start_at: int | None = None, feed: Feed | None = None) -> None:
        self.store = store
        self.feed = feed  # the control plane, fed each batch once it is stored
        self.source = source
        self.config = config
        self.notify = notify
        self.start_at = start_at  # a cursor to start from instead of the stored one (a backfill)
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
        self.stats.newest = pending.newest = Arrival(event.time_us, time.time())
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
        pending = self.pending
        pending.position = position
        if pending.events >= self.config.flush_max_events:
            self.flush()
            # Still full: a batch is being written (or a failed one goes first), so the source waits for the
            # writer; memory stays at two batches however far behind the store falls.
            self.backlogged = self.pending.events >= self.config.flush_max_events
        elif self._writing is None and time.monotonic() - pending.since >= self.config.flush_interval:
            self.flush()

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
        self.notify(Notice("blipflow.ingest.connected", source_resource(self.source.cursor_key), {"endpoint": endpoint}))

    def disconnected(self, endpoint: str) -> None:
        self.stats.disconnects += 1
        self.pending.counters["ingest.disconnects"] += 1
        log.info("ingest disconnected from %s", endpoint)
        self.notify(Notice("blipflow.ingest.disconnected", source_resource(self.source.cursor_key),
                           {"endpoint": endpoint}))

    def report_progress(self) -> None:
        """One notice with what was ingested since the last one (never one per blip)."""
        earlier, when = self.reported
        now = time.monotonic()
        progress = self.stats.progress_since(earlier, now - when)
        self.reported = (IngestStats(**vars(self.stats)), now)
        self.notify(Notice("blipflow.ingest.progress", source_resource(self.source.cursor_key), progress))

    async def drain(self) -> None:
        """Wait until the write in flight is done and the full batch waiting has gone to the writer (which
        then writes it while the source reads the next)."""
        while self.backlogged:
            writing = self._writing
            if writing is not None:
                await asyncio.wait([asyncio.wrap_future(writing)])
            self._recover_failed_write()
            self.flush()
            self.backlogged = self.pending.events >= self.config.flush_max_events

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
        began_at = datetime.now(timezone.utc)
        self.store.apply(batch)
        if self.feed is not None:
            self.feed.stored(taken.blips.values(), began_at)
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
        """Ingest until `stop()` (or the source gives up); flushes everything received before returning.
        The store file stays open between batches meanwhile, while no other process waits for it."""
        with self.store.held(), collector_spares_what_is_already_there():
            await self._run()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.feed is not None:
            await asyncio.to_thread(self.feed.catch_up)
        stored = await asyncio.to_thread(self.store.cursor, self.source.cursor_key)
        cursor = self.start_at if self.start_at is not None else stored if stored is not None else self.source.first_cursor
        if cursor is None:
            log.info("ingest starting at the live end of %s (nothing stored yet; --since asks for history)",
                     self.source.cursor_key)
        else:
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
            if self._writing is None:
                await asyncio.to_thread(self.store.let_go_if_awaited)
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
        # Imported here: the atproto SDK it needs takes ~45 MB of memory a Jetstream ingest has no use for.
        from blipflow.ingest.firehose import FirehoseSource

        return FirehoseSource(
            settings.bluesky.pds_uri,
            wanted_collections=settings.jetstream.wanted_collections,
            wanted_dids=settings.jetstream.wanted_dids,
        )
    raise ValueError(f"unknown source {name!r}: expected one of {', '.join(SOURCE_NAMES)}")


def since_cursor(since: str, source_name: str, now: datetime | None = None) -> int:
    """The cursor `--since` asks ingest to start from: a cursor as given (Jetstream's is `time_us`, wall-clock
    microseconds; a firehose's its `seq`), or for Jetstream a date, a time or an age; BadRequest names it."""
    text = since.strip()
    now = now or datetime.now(timezone.utc)
    if text.isdigit():
        cursor = int(text)
    elif source_name != "jetstream":
        raise BadRequest(f"bad --since: {since!r}: the {source_name} source starts from a cursor (its seq), "
                         "not a date or an age")
    else:
        cursor = int(parse_moment(text, "--since", now).timestamp() * 1_000_000)
    if source_name == "jetstream" and cursor > now.timestamp() * 1_000_000:
        raise BadRequest(f"bad --since: {since!r} is later than now (a Jetstream cursor is time_us, in microseconds)")
    return cursor


async def run_ingest(settings: Settings, source_name: str = "jetstream", notify: Notify = nobody,
                     since: str | None = None) -> IngestStats:
    """Ingest from the named source until SIGTERM/SIGINT or cancellation; everything received is stored.
    With `since` (see `since_cursor`), from there rather than from the stored cursor or the live end."""
    store = Store.from_config(settings.store)
    start_at = None if since is None else since_cursor(since, source_name)
    feed = Feed(ControlPlane.from_settings(settings), store)
    ingestor = Ingestor(store, make_source(settings, source_name), settings.ingest, notify, start_at, feed)
    with stop_on_signals(ingestor.stop):
        try:
            await ingestor.run()
        finally:
            stats = ingestor.stats
            log.info("ingest stopped: %d events received, %d stored, %d bad", stats.received, stats.stored, stats.bad)
    return ingestor.stats
