"""Analytics while ingest writes the same store: a real `blipflow run` fed by the Jetstream stand-in of a
real local PDS, and `blipflow analytics` processes taking their turns at the file (see store.py on sharing
it). Every blip posted meanwhile must be stored, none of them held up for long."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from blipflow.analytics.reports import reports
from blipflow.ingest.simulator import simulate_frames
from blipflow.store.history import IngestBatch, Store
from tests.support.frames import blips
from tests.support.ingest_process import (
    PROJECT_ROOT,
    BlipflowProcess,
    wait_for,
    write_config,
)

HISTORY = 100_000  # events already stored, so that each report holds the file for a while
LONGEST_WAIT_S = 5.0  # from posted on the PDS to stored, while reports run


def test_analytics_runs_while_ingest_writes_and_no_blip_is_lost(tmp_path: Path, atproto_network, jetstream,
                                                                   prefect_server) -> None:
    store_path = tmp_path / "blips.duckdb"
    frames = [frame for frame in simulate_frames(HISTORY, seed=11) if b'"kind":"commit"' in frame]
    Store(store_path).apply(IngestBatch(blips=blips(*frames)))
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                          store_path=store_path)
    kate = atproto_network.create_account("kate")
    posted: dict[str, float] = {}  # uri → when the PDS took it
    stop_posting = threading.Event()

    def keep_posting() -> None:
        client = atproto_network.client_for(kate)
        while not stop_posting.is_set():
            uri, _ = atproto_network.post_blip(client, f"while analytics runs {len(posted)}")
            posted[uri] = time.time()
            time.sleep(0.1)

    ingest = BlipflowProcess(config, ["run"], prefect_server.env(), tmp_path / "ingest.log")
    poster = threading.Thread(target=keep_posting)
    try:
        ingest.wait_for_log("ingest connected to")
        poster.start()
        wait_for(lambda: len(posted) >= 5, 30, "the first blips posted")
        runs = [[name, "--output", "csv"] for name in reports()]
        runs += [["export", "--parquet", str(tmp_path / "parquet")], ["html", str(tmp_path / "report.html")]]
        started = time.time()
        for args in runs:
            done = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "analytics", *args],
                                  cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{args}: {done.stderr}"
        analytics_s = time.time() - started
        stop_posting.set()
        poster.join(30)

        def stored_times() -> dict[str, float] | None:
            rows = Store(store_path).query_all("SELECT uri, epoch(ingested_at) FROM blips WHERE did = ?", [kate.did])
            return dict(rows) if len(rows) >= len(posted) else None

        stored = wait_for(stored_times, 30, "every blip posted")
        assert set(stored) == set(posted)
        waits = [stored[uri] - posted[uri] for uri in posted]
        print(f"{len(posted)} blips posted during {analytics_s:.1f} s of analytics; posted to stored: "
              f"median {statistics.median(waits):.2f} s, longest {max(waits):.2f} s")
        assert max(waits) < LONGEST_WAIT_S
        assert "Traceback" not in ingest.log()
    finally:
        stop_posting.set()
        if poster.is_alive():
            poster.join(30)
        ingest.stop()
