"""The whole loop, timed: a human's blip created on the local PDS until the agent's reply record is
visible on the stream (the Jetstream stand-in), N times in a row with batch_size 1, through real
`blipflow run`, `blipflow dispatch` and `blipflow publish-replies` processes, a real Letta server
(scripted model) and a Prefect server. Overhead is that time minus the time spent inside the Letta call.

Before the last line it prints where the time goes, per round (stderr) and as medians: the PDS and
ingest until the blip is stored, dispatch until the Letta request, the call, closing the window,
publish until the PDS has the reply, the PDS until the stand-in relays it, the stand-in to a reader
(from the store's timestamps and the stand-in's `time_us`). The last line is one JSON object:
{"bench": "e2e", "n": .., "overhead_ms_p50": .., "overhead_ms_p95": .., "letta_ms_p50": ..}

    python bench/e2e.py [--loops 50] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.prefect_server import QUIET_PREFECT, start_prefect_server  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class StreamWatcher:
    """Notes when each blip of `did` arrives on the stream, by the uri of the blip it answers."""

    def __init__(self, subscribe_url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(subscribe_url)
        self.seen: dict[str, tuple[float, float]] = {}  # answered uri → (stand-in's time_us in s, arrival here)
        self.arrived = threading.Condition()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for frame in self.socket:
                at = time.time()
                event = json.loads(frame)
                record = event.get("commit", {}).get("record") or {}
                parent = record.get("reply", {}).get("parent", {}).get("uri")
                if parent:
                    with self.arrived:
                        self.seen[parent] = (event["time_us"] / 1e6, at)
                        self.arrived.notify_all()
        except ConnectionClosed:
            pass

    def wait_for_answer_to(self, uri: str, timeout: float) -> tuple[float, float]:
        with self.arrived:
            if not self.arrived.wait_for(lambda: uri in self.seen, timeout):
                raise TimeoutError(f"no answer to {uri} on the stream within {timeout} s")
            return self.seen[uri]

    def stop(self) -> None:
        self.socket.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="keep logs and the store in this folder")
    args = parser.parse_args()

    from tests.support.agent_accounts import agent_account
    from tests.support.chat_loop import ChatLoop
    from tests.support.jetstream_standin import JetstreamStandin
    from tests.support.letta_server import start_letta_server
    from tests.support.network import LocalNetwork, ensure_installed

    with tempfile.TemporaryDirectory() as folder:
        work = args.keep or Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        ensure_installed()
        network = LocalNetwork().start(work / "network")
        started = []
        try:
            prefect = start_prefect_server(work / "prefect")
            started.append(prefect)
            os.environ.update(QUIET_PREFECT, PREFECT_API_URL=prefect.api_url, PREFECT_HOME=str(prefect.home))
            jetstream = JetstreamStandin.start(network.pds_ws_url, log_path=work / "standin.log")
            started.append(jetstream)
            letta = start_letta_server(work / "letta")
            started.append(letta)
            scout = agent_account(network, "scout")
            human = network.create_account("human")
            (work / "loop").mkdir()
            # The rate limits would hold a quick series of questions back: latency, not pacing, is measured.
            unlimited = scout.config("scout", letta.create_agent("letta_v1_agent"), max_replies_per_minute=10_000)
            loop = ChatLoop(work / "loop", network, jetstream.url, letta.base_url, prefect.env(), [unlimited],
                            publish={"posts_per_minute": 10_000}).start()
            started.append(loop)
            watcher = StreamWatcher(f"{jetstream.url}/subscribe?wantedCollections=stream.thought.blip"
                                    f"&wantedDids={scout.did}")
            started.append(watcher)
            measure(args.loops, network, human, loop, watcher)
        finally:
            for thing in reversed(started):
                thing.stop()
            network.stop()


def stage_times(plane) -> dict[str, tuple]:
    """uri → (stored, sent, letta_ms, finished, posted) of each blip answered, times in epoch seconds."""
    from sqlalchemy import select

    from blipflow.control import tables

    blip, delivery, window, reply, post = tables.Blip, tables.Delivery, tables.Window, tables.Reply, tables.Post
    query = (select(blip.uri, blip.stored_at, window.sent_at, window.letta_ms, window.finished_at, post.posted_at)
             .join(delivery, delivery.blip_uri == blip.uri).join(window, window.id == delivery.window_id)
             .join(reply, reply.window_id == window.id).join(post, post.reply_id == reply.id))
    with plane.reading() as session:
        return {uri: (stored.timestamp(), sent.timestamp(), letta_ms, finished.timestamp(), posted.timestamp())
                for uri, stored, sent, letta_ms, finished, posted in session.execute(query)}


def measure(loops: int, network, human, loop, watcher: StreamWatcher) -> None:
    client = network.client_for(human)
    rounds: list[tuple[str, float, tuple[float, float]]] = []
    for n in range(loops + 1):  # the first round warms up (logins, first task runs) and is not counted
        uri, _ = network.post_blip(client, f"question {n} [[reply:answer {n}]]")
        created = time.time()  # the PDS has committed the blip
        answered = watcher.wait_for_answer_to(uri, 120)
        if n:
            rounds.append((uri, created, answered))
    rows = stage_times(loop.plane)
    overhead, letta, stages = [], [], {name: [] for name in (
        "pds_to_store", "store_to_letta", "letta", "window_closing", "answer_to_posted", "posted_to_standin",
        "standin_to_reader")}
    for uri, created, (relayed, answered) in rounds:
        ingested, sent, letta_ms, finished, posted = rows[uri]
        letta.append(letta_ms)
        overhead.append((answered - created) * 1000 - letta_ms)
        stages["pds_to_store"].append((ingested - created) * 1000)
        stages["store_to_letta"].append((sent - ingested) * 1000)
        stages["letta"].append(letta_ms)
        stages["window_closing"].append((finished - sent) * 1000 - letta_ms)
        stages["answer_to_posted"].append((posted - finished) * 1000)
        stages["posted_to_standin"].append((relayed - posted) * 1000)
        stages["standin_to_reader"].append((answered - relayed) * 1000)
        print(json.dumps({"round": uri.rsplit("/", 1)[1], **{name: round(values[-1], 1) for name, values in stages.items()}}),
              file=sys.stderr)
    print(json.dumps({"stages_ms_p50": {name: round(statistics.median(values), 1) for name, values in stages.items()}}))
    print(json.dumps({"bench": "e2e", "n": len(rounds), "overhead_ms_p50": round(percentile(overhead, 0.5), 1),
                      "overhead_ms_p95": round(percentile(overhead, 0.95), 1),
                      "letta_ms_p50": round(statistics.median(letta), 1)}))


if __name__ == "__main__":
    main()
