"""Ingest throughput against the raw limit of the same client, measured in the same run.

Replays N realistic Jetstream v1 events (blipflow.simulator) from the Jetstream stand-in running in
its own process, once into the real ingest path and DuckDB ("events_per_s": until every event is
stored), and once into the same client that only receives and parses ("raw_per_s"). Each
measurement runs in a fresh child process, alternating, and the best of the rounds counts for both.
Last line: one JSON object.

    python bench/ingest.py [--events 200000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blipflow.config import Settings  # noqa: E402
from blipflow.control.engine import ControlPlane  # noqa: E402
from blipflow.ingest.feed import Feed  # noqa: E402
from blipflow.ingest.ingester import Ingestor, make_source  # noqa: E402
from blipflow.ingest.simulator import simulate_frames  # noqa: E402
from blipflow.ingest.source import PassiveSink  # noqa: E402
from blipflow.model.events import BadFrame, Event  # noqa: E402
from blipflow.store.history import IngestBatch, Store  # noqa: E402


class CountingSink(PassiveSink):
    """The raw limit: the same source (receive + parse), nothing kept."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    def accept(self, event: Event) -> None:
        self.count += 1

    def advance(self, position: int) -> None:
        if self.count >= self.expected:
            self.done.set()

    def reject(self, bad: BadFrame) -> None:
        raise AssertionError(f"the simulator produced a bad frame: {bad}")


def settings_for(url: str, store_path: Path) -> Settings:
    return Settings(jetstream={"instances": [url], "rewind_seconds": 0}, store={"path": store_path})


async def measure_raw(url: str, events: int) -> float:
    source = make_source(settings_for(url, Path("unused.duckdb")), "jetstream")
    sink = CountingSink(events)
    started = time.perf_counter()
    reading = asyncio.create_task(source.run(sink, 0))
    await sink.done.wait()
    elapsed = time.perf_counter() - started
    reading.cancel()
    return elapsed


async def measure_store(url: str, events: int, store_path: Path, feed: bool) -> tuple[float, int]:
    settings = settings_for(url, store_path)
    store = Store(store_path)
    store.apply(IngestBatch(cursor_key="jetstream", cursor=0))  # replay the stand-in's log from its start
    # with `feed`, as `blipflow run` ingests: each batch goes on into the control plane (SQLite beside the store)
    fed = Feed(ControlPlane.from_settings(settings), store) if feed else None
    ingestor = Ingestor(store, make_source(settings, "jetstream"), settings.ingest, feed=fed)

    async def stop_when_all_received() -> None:
        while ingestor.stats.received < events:
            await asyncio.sleep(0.002)
        ingestor.stop()

    started = time.perf_counter()
    watcher = asyncio.create_task(stop_when_all_received())
    await ingestor.run()  # returns once everything received is stored
    elapsed = time.perf_counter() - started
    await watcher
    return elapsed, ingestor.stats.stored


class RssSampler:
    """This process's resident memory, read from /proc once every `interval` seconds on a thread of its own."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(resident_mb())

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(resident_mb())
            self._stop.wait(self.interval)


def peak_resident_mb() -> float:
    """The high-water mark of this process's own memory. Not getrusage's ru_maxrss: that survives the exec
    of a child, so it counted the parent's simulated frames (~1.2 GB for 200k events) against every child."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def child(mode: str, url: str, events: int, feed: bool) -> None:
    if mode == "raw":
        with RssSampler() as rss:
            result = {"seconds": asyncio.run(measure_raw(url, events))}
    else:
        with tempfile.TemporaryDirectory() as folder, RssSampler() as rss:
            seconds, stored = asyncio.run(measure_store(url, events, Path(folder) / "bench.duckdb", feed))
        result = {"seconds": seconds, "stored": stored}
    result["rss_mb_max"] = peak_resident_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU of the whole child, imports included
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["rss_mb_samples"] = [round(sample) for sample in rss.samples]
    print(json.dumps(result))


def run_child(mode: str, url: str, events: int, feed: bool = False) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--events", str(events), *(["--feed"] if feed else [])],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["raw", "store"])
    parser.add_argument("--url")
    parser.add_argument("--feed", action="store_true", help="feed the control plane too, as `blipflow run` does")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.events, args.feed)
        return

    from tests.support.jetstream_standin import JetstreamStandin

    with tempfile.TemporaryDirectory() as folder:
        events_file = Path(folder) / "events.jsonl"
        events_file.write_bytes(b"\n".join(simulate_frames(args.events)) + b"\n")
        standin = JetstreamStandin.start(events_file=events_file, timeout=120)
        try:
            raw, stored = [], []
            for _ in range(args.rounds):
                raw.append(run_child("raw", standin.url, args.events))
                stored.append(run_child("store", standin.url, args.events, args.feed))
                print(f"raw {args.events / raw[-1]['seconds']:,.0f}/s  store {args.events / stored[-1]['seconds']:,.0f}/s",
                      file=sys.stderr)
        finally:
            standin.stop()
    best_raw = min(raw, key=lambda r: r["seconds"])
    best = min(stored, key=lambda r: r["seconds"])
    events_per_s = args.events / best["seconds"]
    raw_per_s = args.events / best_raw["seconds"]
    print(json.dumps({
        "bench": "ingest",
        "feed": args.feed,
        "events": args.events,
        "stored": best["stored"],
        "events_per_s": round(events_per_s),
        "raw_limit_per_s": round(raw_per_s),
        "ratio": round(events_per_s / raw_per_s, 3),
        "rss_mb_max": round(max(run["rss_mb_max"] for run in stored)),  # of every store run, not only the best
        "rss_mb_samples": best["rss_mb_samples"],
        "raw_rss_mb_max": round(best_raw["rss_mb_max"]),
        # CPU time per event of each child (best round; on a busy machine these hold where rates do not)
        "cpu_us_per_event": round(best["cpu_seconds"] / args.events * 1e6, 1),
        "raw_cpu_us_per_event": round(best_raw["cpu_seconds"] / args.events * 1e6, 1),
        "rounds": args.rounds,
    }))


if __name__ == "__main__":
    main()
