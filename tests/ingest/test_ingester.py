"""The Ingestor without a network: an in-test source feeds it frames; a real DuckDB file receives them."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest

from blipflow.config import IngestConfig
from blipflow.ingest.ingester import Ingestor
from blipflow.ingest.jetstream import parse_event
from blipflow.ingest.simulator import simulate_frames
from blipflow.ingest.source import EventSink
from blipflow.model.events import BadFrame, CommitEvent
from blipflow.model.notices import Notice
from blipflow.store.history import Store

T0 = 1_760_000_000_000_000


class FrameSource:
    """Feeds its frames like the Jetstream source does, in parts (awaiting a gate before each part),
    then waits until cancelled; `pause` seconds between events makes a slow trickle."""

    cursor_key = "test-source"
    first_cursor = None

    def __init__(self, *parts: Sequence[bytes], gates: Sequence[asyncio.Event | None] = (), pause: float = 0.0):
        self.parts = parts
        self.gates = list(gates) + [None] * (len(parts) - len(gates))
        self.pause = pause
        self.given_cursor: int | None | str = "never called"
        self.part_done = [asyncio.Event() for _ in parts]
        self.advanced: int | None = None

    async def run(self, sink: EventSink, cursor: int | None) -> None:
        self.given_cursor = cursor
        for part, gate, done in zip(self.parts, self.gates, self.part_done):
            if gate is not None:
                await gate.wait()
            for index, frame in enumerate(part):
                try:
                    event = parse_event(frame)
                except BadFrame as bad:
                    sink.reject(bad)
                    continue
                sink.accept(event)
                sink.advance(event.time_us)
                self.advanced = event.time_us
                if sink.backlogged:
                    await sink.drain()
                if self.pause:
                    await asyncio.sleep(self.pause)
            done.set()
        await asyncio.Event().wait()


def expected_blips(frames: Sequence[bytes]) -> dict[str, str | None]:
    """uri -> content after the frames, in time order; None for deleted."""
    state: dict[str, tuple[int, str | None]] = {}
    for frame in frames:
        try:
            event = parse_event(frame)
        except BadFrame:
            continue
        if isinstance(event, CommitEvent) and isinstance((event.record or {}).get("content", ""), str):
            if event.uri not in state or event.time_us > state[event.uri][0]:
                content = None if event.operation == "delete" else event.record["content"]
                state[event.uri] = (event.time_us, content)
    return {uri: content for uri, (_, content) in state.items()}


def stored_blips(store: Store) -> dict[str, str | None]:
    rows = store.query_all("SELECT uri, deleted, content FROM blips")
    assert all(deleted == (content is None) for _, deleted, content in rows)
    return {uri: content for uri, _, content in rows}


def good_events(frames: Sequence[bytes]) -> int:
    count = 0
    for frame in frames:
        try:
            parse_event(frame)
        except BadFrame:
            continue
        count += 1
    return count


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def blip_frame(did: str, rkey: str, time_us: int, content: object) -> bytes:
    return orjson.dumps({"did": did, "time_us": time_us, "kind": "commit", "commit": {
        "rev": "r", "operation": "create", "collection": "stream.thought.blip", "rkey": rkey, "cid": "bafy",
        "record": {"$type": "stream.thought.blip", "content": content, "createdAt": "2025-10-09T08:53:20Z"}}})


def churn_frames(count: int, start_us: int) -> list[bytes]:
    """Blips created and soon after edited, and some deleted, in time order: a batch written after a
    later one would show up as an older content or a resurrected blip."""
    did = "did:plc:churn00000000000000000000"

    def commit(time_us: int, operation: str, rkey: str, content: str | None = None) -> bytes:
        body = {"rev": f"r{time_us}", "operation": operation, "collection": "stream.thought.blip", "rkey": rkey}
        if content is not None:
            body.update(cid=f"bafy{time_us}", record={"$type": "stream.thought.blip", "content": content})
        return orjson.dumps({"did": did, "time_us": time_us, "kind": "commit", "commit": body})

    frames = []
    time_us = start_us
    for i in range(count):
        time_us += 1000
        frames.append(commit(time_us, "create", f"k{i}", f"blip {i}"))
        if i >= 5:
            time_us += 1000
            frames.append(commit(time_us, "update", f"k{i - 5}", f"blip {i - 5}, edited"))
        if i >= 15 and i % 3 == 0:
            time_us += 1000
            frames.append(commit(time_us, "delete", f"k{i - 15}"))
    return frames


def with_bad_frames(frames: list[bytes]) -> list[bytes]:
    bad = {
        10: b"{not json",
        20: b"[1]",
        30: b"{not json either",
        40: orjson.dumps({"did": "nope", "time_us": 1, "kind": "commit"}),
        50: b"\xff\xfe",
        60: blip_frame("did:plc:big", "big1", T0 + 1, "x" * 5000),
        70: blip_frame("did:plc:odd", "odd1", T0 + 2, {"text": "not a string"}),
    }
    mixed: list[bytes] = []
    for index, frame in enumerate(frames):
        if index in bad:
            mixed.append(bad[index])
        mixed.append(frame)
    return mixed


def config(**fields: float) -> IngestConfig:
    return IngestConfig(**{"flush_interval": 0.02, "flush_max_events": 50, "max_content_bytes": 4000, **fields})


async def run_until(ingestor: Ingestor, *events: asyncio.Event) -> None:
    running = asyncio.create_task(ingestor.run())
    waiting = asyncio.gather(*(event.wait() for event in events))
    done, _ = await asyncio.wait({running, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert waiting in done, running.exception() if running in done else "source did not finish in time"
    ingestor.stop()
    await asyncio.wait_for(running, 30)


# -- tests -----------------------------------------------------------------------------------------


def test_everything_stored_once_bad_frames_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="blipflow.ingest")
    frames = simulate_frames(400, seed=3, authors=30)
    # a reconnect replays an overlap, in time order, as Jetstream does after a rewound cursor
    stream = with_bad_frames(frames[:300]) + frames[250:]
    store = Store(tmp_path / "s.duckdb", lock_timeout=10)
    source = FrameSource(stream)

    async def main() -> Ingestor:
        ingestor = Ingestor(store, source, config())
        await run_until(ingestor, *source.part_done)
        return ingestor

    ingestor = asyncio.run(main())

    assert stored_blips(store) == expected_blips(frames)
    counters = store.counters()
    assert counters["ingest.bad.not_json"] == 3
    assert counters["ingest.bad.not_object"] == 1
    assert counters["ingest.bad.bad_did"] == 1
    assert counters["ingest.bad.oversized"] == 1
    assert counters["ingest.bad.bad_record"] == 1
    assert counters["ingest.events"] == good_events(stream) == ingestor.stats.received
    assert ingestor.stats.bad == 7
    assert ingestor.stats.stored == ingestor.stats.received
    assert ingestor.stats.flushes > 1  # written in batches while running, not only at the end
    assert store.cursor("test-source") == parse_event(frames[-1]).time_us == source.advanced

    bad_lines = [r.getMessage() for r in caplog.records if "skipped a bad event" in r.getMessage()]
    reasons = sorted(line.split("skipped a bad event, ")[1].split(":")[0] for line in bad_lines)
    assert reasons == ["bad_did", "bad_record", "not_json", "not_object", "oversized"]


def test_stop_flushes_everything_received(tmp_path: Path) -> None:
    frames = simulate_frames(150, seed=5)
    store = Store(tmp_path / "s.duckdb", lock_timeout=10)
    source = FrameSource(frames)

    async def main() -> None:
        ingestor = Ingestor(store, source, config(flush_interval=60, flush_max_events=10_000))
        running = asyncio.create_task(ingestor.run())
        await asyncio.wait_for(source.part_done[0].wait(), 10)
        await asyncio.sleep(0.1)
        assert store.query_all("SELECT count(*) FROM blips") == [(0,)]  # all still in memory
        assert store.cursor("test-source") is None
        ingestor.stop()
        await asyncio.wait_for(running, 10)

    asyncio.run(main())
    assert stored_blips(store) == expected_blips(frames)
    assert store.cursor("test-source") == parse_event(frames[-1]).time_us
    assert store.counters()["ingest.events"] == 150


def test_restart_resumes_from_stored_cursor(tmp_path: Path) -> None:
    frames = simulate_frames(300, seed=9, authors=20)
    path = tmp_path / "s.duckdb"
    first = FrameSource(frames[:120])

    async def run(source: FrameSource) -> None:
        await run_until(Ingestor(Store(path, lock_timeout=10), source, config()), *source.part_done)

    asyncio.run(run(first))
    assert first.given_cursor is None  # a new store has no cursor
    cursor = Store(path).cursor("test-source")
    assert cursor == parse_event(frames[119]).time_us

    # the restarted source resumes a little before the cursor, as Jetstream does with its rewind
    resume = [f for f in frames if parse_event(f).time_us >= cursor - 20_000]
    assert len(resume) > 180
    second = FrameSource(resume)
    asyncio.run(run(second))
    assert second.given_cursor == cursor
    store = Store(path)
    assert store.cursor("test-source") == parse_event(frames[-1]).time_us
    assert stored_blips(store) == expected_blips(frames)
    assert store.counters()["ingest.events"] == 120 + len(resume)


# Another blipflow process holding the store for a while (a long analytics query, say). It opens the file as
# every blipflow process does, saying it waits, so the ingester, which keeps the file open between its
# batches, lets go of it.
HOLD_SCRIPT = """
import sys, time
from blipflow.store.history import Store
with Store(sys.argv[1], lock_timeout=10).connect():
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.process
def test_busy_store_keeps_events_in_memory_and_writes_them_later(tmp_path: Path) -> None:
    first = simulate_frames(200, seed=13)
    second = churn_frames(180, parse_event(first[-1]).time_us)
    frames = first + second
    path = tmp_path / "s.duckdb"
    store = Store(path, lock_timeout=0.2)
    go = asyncio.Event
    holder: subprocess.Popen[str] | None = None

    async def main() -> Ingestor:
        nonlocal holder
        gate = go()
        # the second part trickles in while the file is held, so several writes fail in a row
        source = FrameSource(first, second, gates=[None, gate], pause=0.005)
        ingestor = Ingestor(store, source, config(flush_interval=0.05, flush_max_events=10_000))
        running = asyncio.create_task(ingestor.run())
        await asyncio.wait_for(source.part_done[0].wait(), 10)
        await wait_for(lambda: ingestor.stats.stored == 200, what="the first part to be written")

        holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(path), "1.5"],
                                  stdout=subprocess.PIPE, text=True)
        line = await asyncio.to_thread(holder.stdout.readline)
        assert line.strip() == "holding"
        gate.set()
        await wait_for(lambda: ingestor.stats.store_retries >= 2, what="writes to fail while the file is held")
        assert holder.poll() is None
        await asyncio.to_thread(holder.wait)
        # written by a later flush while running, not only on the way out
        await wait_for(lambda: source.part_done[1].is_set() and ingestor.stats.stored == len(frames),
                       what="everything to be written after the file is released")
        ingestor.stop()
        await asyncio.wait_for(running, 10)
        return ingestor

    try:
        ingestor = asyncio.run(main())
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait()

    assert ingestor.stats.store_retries >= 2
    assert stored_blips(store) == expected_blips(frames)
    assert store.counters()["ingest.events"] == len(frames)  # each event counted once: failed writes left nothing
    assert store.cursor("test-source") == parse_event(frames[-1]).time_us


class TwoStepSource:
    """Two blips, a failed write, then an edit of one of them arriving before the periodic retry."""

    cursor_key = "test-source"
    first_cursor = None

    def __init__(self, frames: Sequence[bytes]) -> None:
        self.frames = frames
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.done = asyncio.Event()

    async def run(self, sink: Ingestor, cursor: int | None) -> None:
        first, second, edit = (parse_event(f) for f in self.frames)
        self.started.set()
        await self.go.wait()
        sink.accept(first)
        sink.accept(second)
        sink.advance(second.time_us)  # written at once (flush_max_events=1), and that write fails
        await wait_for(lambda: sink.stats.store_retries == 1 and sink._writing is None, what="a failed write")
        sink.accept(edit)
        sink.advance(edit.time_us)
        self.done.set()
        await asyncio.Event().wait()


@pytest.mark.process
def test_write_failing_again_before_the_retry_loses_nothing(tmp_path: Path) -> None:
    did = "did:plc:twostep0000000000000000000"
    frames = [blip_frame(did, "a", T0 + 1, "a, first"), blip_frame(did, "b", T0 + 2, "b"),
              blip_frame(did, "a", T0 + 3, "a, edited")]
    path = tmp_path / "s.duckdb"
    store = Store(path, lock_timeout=0.1)
    holder: subprocess.Popen[str] | None = None

    async def main() -> None:
        nonlocal holder
        source = TwoStepSource(frames)
        # the periodic retry comes only every 0.5 s: after both writes have failed
        ingestor = Ingestor(store, source, config(flush_interval=1.0, flush_max_events=1))
        running = asyncio.create_task(ingestor.run())
        await asyncio.wait_for(source.started.wait(), 5)
        holder = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(path), "1.2"],
                                  stdout=subprocess.PIPE, text=True)
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "holding"
        source.go.set()
        await asyncio.wait_for(source.done.wait(), 5)
        assert holder.poll() is None  # the edit arrived while the file was held
        await asyncio.to_thread(holder.wait)
        await wait_for(lambda: ingestor.stats.stored == 3, timeout=5, what="all three events to be written")
        ingestor.stop()
        await asyncio.wait_for(running, 10)

    try:
        asyncio.run(main())
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait()
    assert stored_blips(store) == expected_blips(frames) == {f"at://{did}/stream.thought.blip/a": "a, edited",
                                                              f"at://{did}/stream.thought.blip/b": "b"}
    assert store.counters()["ingest.events"] == 3


def test_progress_is_reported_in_batches_never_per_blip(tmp_path: Path) -> None:
    frames = simulate_frames(300, seed=5, authors=20)
    source = FrameSource(frames, pause=0.004)  # a trickle of ~1.5 s
    notices: list[Notice] = []

    async def main() -> Ingestor:
        ingestor = Ingestor(Store(tmp_path / "s.duckdb"), source, config(report_interval=0.5), notices.append)
        await run_until(ingestor, *source.part_done)
        return ingestor

    ingestor = asyncio.run(main())
    progress = [n for n in notices if n.event == "blipflow.ingest.progress"]
    assert 2 <= len(progress) <= 6  # every half second while it ran, and once at the end
    assert {n.resource for n in progress} == {"blipflow.source.test-source"}
    assert sum(n.payload["events"] for n in progress) == ingestor.stats.received == len(frames)
    assert progress[-1].payload["stored_total"] == len(frames)
