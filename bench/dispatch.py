"""Dispatch throughput and overhead: N agents, B stored blips, windows of batch_size, through the real
dispatch flow on a real Prefect server, against the real Letta server (scripted model) or, with
--fake-latency-ms, the fake Letta answering after that many milliseconds (in a process of its own, as a real
Letta runs beside dispatch: its work is not counted against the dispatcher).

Per window, overhead is the time outside the Letta call: each agent's windows go one after another,
so a window's cycle is the time since the agent's previous window finished, and overhead is that
cycle minus the Letta call. store_to_request is the time from a window's oldest blip being stored (or
the run starting, for blips stored before it) to the window being sent: with every blip stored up front,
that is mostly time spent queueing behind the agent's earlier windows.

Throughput is what the run sustained once under way, against the agents' own limit: windows_per_s is the
sum of each agent's own rate from the end of its first window to the end of its last (the start-up is left
out), and limit_per_s is lanes ÷ Letta's latency (the fake's, or the real server's median), what the agents
could take if dispatch cost nothing. (Counting the windows finished between the first and the last tenth of
all of them overstated it by up to a round: lanes that keep pace finish their windows in bursts, one a
round, and the tenths fell at the start of one burst and the end of another.) task_runs is how many task runs
the Prefect server recorded. Last line: one JSON object.

    python bench/dispatch.py [--agents 20] [--blips 2000] [--batch-size 5] [--fake-latency-ms 50] [--without-prefect]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.prefect_server import QUIET_PREFECT, start_prefect_server  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--blips", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--fake-latency-ms", type=float, default=None, help="use the fake Letta with this latency")
    parser.add_argument("--without-prefect", action="store_true",
                        help="first measure the library alone on a store of its own: without_prefect_windows_per_s")
    parser.add_argument("--live", type=int, default=0, metavar="N",
                        help="instead: N blips stored one by one while `blipflow dispatch` runs (batch_size 1)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        prefect = start_prefect_server(work / "prefect")
        os.environ.update(QUIET_PREFECT, PREFECT_API_URL=prefect.api_url, PREFECT_HOME=str(prefect.home))
        peer = None
        try:
            peer, create_agent = start_letta(args, work)
            measure = run_live if args.live else run
            print(json.dumps(measure(args, work, peer.base_url, create_agent, prefect.api_url)))
        finally:
            if peer is not None:
                peer.stop()
            from flows.prefect_api import send_logs_and_events

            send_logs_and_events()  # the in-process runs' last logs and events, while the server is there to take them
            prefect.stop()


def start_letta(args: argparse.Namespace, work: Path):
    if args.fake_latency_ms is not None:
        from tests.support.fake_letta import FakeLettaProcess

        fake = FakeLettaProcess(latency_ms=args.fake_latency_ms)  # beside dispatch, as a real Letta runs
        return fake, fake.create_agent
    from tests.support.letta_server import ensure_installed, start_letta_server

    ensure_installed()
    server = start_letta_server(work / "letta")
    return server, lambda: server.create_agent("letta_v1_agent")


def run(args: argparse.Namespace, work: Path, letta_url: str, create_agent, api_url: str) -> dict:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.dispatch import dispatch

    baseline = {}
    if args.without_prefect:
        stores, config = prepared(args, work / "library", letta_url, create_agent)
        started = time.time()
        delivered_by_library(config)
        baseline = {"without_prefect_windows_per_s": round(measured(args, stores, started)["windows_per_s"], 1)}

    stores, config = prepared(args, work / "flow", letta_url, create_agent)
    expected = args.agents * -(-args.blips // args.batch_size)
    started = time.time()
    # A heartbeat thread costs a run up to a second at its end; nothing watches this one-off run for crashes.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        delivered = dispatch(config_file=str(config), until_idle=True)
    elapsed = time.time() - started
    assert delivered == expected, f"{delivered} windows delivered, {expected} expected"
    figures = measured(args, stores, started)
    windows, windows_per_s, limit_per_s = (figures.pop(name) for name in ("windows", "windows_per_s", "limit_per_s"))
    return {
        "bench": "dispatch",
        "letta": "fake" if args.fake_latency_ms is not None else "real",
        "agents": args.agents,
        "blips": args.blips,
        "windows": windows,
        "seconds": round(elapsed, 1),
        **{name: round(value, 1) for name, value in figures.items()},
        **baseline,
        "windows_per_s": round(windows_per_s, 1),
        "limit_per_s": round(limit_per_s, 1),
        "ratio": round(windows_per_s / limit_per_s, 3),
        "task_runs": count_task_runs(api_url),
    }


def prepared(args: argparse.Namespace, folder: Path, letta_url: str, create_agent):
    """The stores (history and control plane, fed) of `args.blips` blips in `folder`, and a config of `args.agents` agents dispatching from it."""
    import yaml

    from blipflow.ingest.simulator import simulate_frames
    from blipflow.store.history import IngestBatch
    from tests.support.fed_stores import FedStores
    from tests.support.frames import blips

    folder.mkdir()
    stores = FedStores.beside(folder / "bench.duckdb")
    frames = [f for f in simulate_frames(args.blips * 2) if b'"operation":"create"' in f][: args.blips]
    stores.apply(IngestBatch(blips=blips(*frames)))
    agents = [{"name": f"agent{n}", "agent_id": create_agent(), "batch_size": args.batch_size,
               "max_wait_seconds": 0, "max_replies_per_minute": 1_000_000,
               "backlog_seconds": 10**9} for n in range(args.agents)]
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(stores.store.path)}, "letta": {"base_url": letta_url, "timeout": 120},
        "bluesky": {"plc_uri": "http://127.0.0.1:9"}, "agents": agents,
    }))
    return stores, config


def delivered_by_library(config: Path) -> int:
    """The baseline without Prefect: the library's Dispatcher driven as the flow drives it — planning in
    one thread, each agent's windows one at a time in a thread of their own, which takes the agent's next
    window itself when it is done with one — with no task runs, logs, events or artifacts. What the flow
    sustains below this is the Prefect layer's cost."""
    import concurrent.futures
    from contextlib import closing

    from blipflow.config import load_settings
    from flows.dispatch import build_dispatcher

    settings = load_settings(config)
    dispatcher = build_dispatcher(settings)

    def lane(window) -> int:
        delivered = 0
        while window is not None:
            if dispatcher.deliver(window).outcome not in ("in_flight", "handed_over"):
                delivered += 1
            window = dispatcher.next_window(window.agent)
        return delivered

    delivered = 0
    with closing(dispatcher), concurrent.futures.ThreadPoolExecutor(max_workers=len(settings.agents)) as pool:
        running: dict[str, concurrent.futures.Future] = {}
        while True:
            for window in dispatcher.plan(taking_their_own=running.keys()):
                if window.agent not in running:
                    running[window.agent] = pool.submit(lane, window)
            if not running:
                return delivered
            done, _ = concurrent.futures.wait(running.values(), timeout=settings.dispatch.poll_interval,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for agent in [agent for agent, future in running.items() if future in done]:
                delivered += running.pop(agent).result()


def measured(args: argparse.Namespace, stores, started: float) -> dict[str, float]:
    rows = answered_windows(stores.plane)
    overhead, to_request, letta = [], [], []
    previous: dict[str, float] = {}
    for agent, sent, finished, letta_ms, oldest in rows:
        cycle_ms = (finished - previous.get(agent, started)) * 1000
        previous[agent] = finished
        overhead.append(cycle_ms - letta_ms)
        letta.append(letta_ms)
        to_request.append((sent - max(oldest, started)) * 1000)
    latency_s = (args.fake_latency_ms if args.fake_latency_ms is not None else statistics.median(letta)) / 1000
    return {
        "windows": len(rows),
        "overhead_ms_p50": statistics.median(overhead),
        "overhead_ms_p95": percentile(overhead, 0.95),
        "letta_ms_p50": statistics.median(letta),
        "store_to_request_ms_p50": statistics.median(to_request),
        "windows_per_s": sustained_rate(rows),
        "limit_per_s": args.agents / latency_s,
    }


def sustained_rate(rows: list[tuple]) -> float:
    """The sum over agents of the windows each finished after its first, per second since that first one."""
    finishes: dict[str, list[float]] = {}
    for agent, _, finished, _, _ in rows:
        finishes.setdefault(agent, []).append(finished)
    return sum((len(times) - 1) / (max(times) - min(times)) for times in finishes.values() if len(times) > 1)


def answered_windows(plane) -> list[tuple]:
    """(agent, sent, finished, letta_ms, when its oldest blip was stored) of each answered or silent window,
    times in epoch seconds, by agent and finish."""
    from sqlalchemy import func, select

    from blipflow.control import tables

    window, delivery, blip = tables.Window, tables.Delivery, tables.Blip
    oldest = (select(func.min(blip.stored_at)).join(delivery, delivery.blip_uri == blip.uri)
              .where(delivery.window_id == window.id).scalar_subquery())
    query = (select(window.agent, window.sent_at, window.finished_at, window.letta_ms, oldest.label("oldest"))
             .where(window.state.in_(["answered", "silent"])).order_by(window.agent, window.finished_at))
    with plane.reading() as session:
        return [(agent, sent.timestamp(), finished.timestamp(), letta_ms,
                 tables.UtcDateTime().process_result_value(first, None).timestamp())
                for agent, sent, finished, letta_ms, first in session.execute(query)]


def run_live(args: argparse.Namespace, work: Path, letta_url: str, create_agent, api_url: str) -> dict:
    """Store-to-request latency as a person sees it: blips arrive while dispatch is running."""
    import signal
    import subprocess

    import yaml

    from blipflow.ingest.simulator import simulate_frames
    from blipflow.store.history import IngestBatch
    from tests.support.fed_stores import FedStores
    from tests.support.frames import blips

    stores = FedStores.beside(work / "live.duckdb")
    store = stores.store
    config = work / "live.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"path": str(store.path)}, "letta": {"base_url": letta_url, "timeout": 120},
        "bluesky": {"plc_uri": "http://127.0.0.1:9"},
        "agents": [{"name": "live", "agent_id": create_agent(), "batch_size": 1, "max_replies_per_minute": 1000,
                    "backlog_seconds": 10**9}],
    }))
    process = subprocess.Popen([sys.executable, "-m", "cli", "-c", str(config), "dispatch"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        store.query_all("SELECT 1")
        time.sleep(8)  # the flow run starts (Prefect client, imports)
        frames = [f for f in simulate_frames(args.live * 2) if b'"operation":"create"' in f][: args.live]
        for frame in frames:
            stores.apply(IngestBatch(blips=blips(frame)))
            time.sleep(0.5)
        deadline = time.time() + 60
        while time.time() < deadline and len(answered_windows(stores.plane)) < args.live:
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    rows = [((sent - oldest) * 1000, letta_ms) for _, sent, _, letta_ms, oldest in answered_windows(stores.plane)]
    latencies = [latency for latency, _ in rows]
    return {
        "bench": "dispatch-live",
        "letta": "fake" if args.fake_latency_ms is not None else "real",
        "blips": args.live,
        "windows": len(latencies),
        "store_to_request_ms_p50": round(statistics.median(latencies), 1),
        "store_to_request_ms_p95": round(percentile(latencies, 0.95), 1),
        "letta_ms_p50": round(statistics.median(letta for _, letta in rows), 1),
    }


def count_task_runs(api_url: str) -> int:
    """The task runs the server recorded, once the count has stopped growing (it records them from the
    events the run sent, a moment after they arrive)."""
    request = urllib.request.Request(f"{api_url}/task_runs/count", data=b"{}", method="POST",
                                     headers={"content-type": "application/json"})
    counts = [-1]
    while True:
        with urllib.request.urlopen(request, timeout=30) as response:
            counts.append(int(json.loads(response.read())))
        if counts[-1] == counts[-2]:
            return counts[-1]
        time.sleep(2)


if __name__ == "__main__":
    main()
