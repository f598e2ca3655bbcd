"""The HTML analytics page as a person sees it, in headless Chromium: at-uris shown as handle/rkey with a
link to the whole uri, latencies in human units, and a threads table of reasonable height."""

from __future__ import annotations

import functools
import random
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from blipflow.store.history import Identity, IngestBatch, Store
from tests.support.frames import T0, blips, commit_frame, uri
from tests.support.ingest_process import PROJECT_ROOT

THREADS = 20
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def did(rng: random.Random) -> str:
    return "did:plc:" + "".join(rng.choice(BASE32) for _ in range(24))


def rkey(rng: random.Random) -> str:
    return "3l" + "".join(rng.choice(BASE32) for _ in range(11))


def thread_history(store: Store) -> tuple[str, str]:
    """Twenty threads as thought.stream has them (real-length DIDs and record keys, openings of 80 characters
    and more), each answered by the agent scout: the first after 196097 ms, the others after 204 ms. Returns
    the agent's DID and the first thread's root at-uri."""
    rng = random.Random(10)
    scout = did(rng)
    frames, identities = [], [Identity(scout, "scout.agents.test", "Scout", None, None)]
    first_root = ""
    for index in range(THREADS):
        person, root = did(rng), rkey(rng)
        identities.append(Identity(person, f"person-{index}.test", None, None, None))
        started = T0 + index * 600_000_000
        opening = f"Thread {index}: what do agents remember between sessions, and who decides what they forget?"
        frames.append(commit_frame(person, root, started, content=opening, cid=f"cid-{root}"))
        reference = {"uri": uri(person, root), "cid": f"cid-{root}"}
        answer_ms = 196_097 if index == 0 else 204
        frames.append(commit_frame(scout, rkey(rng), started + answer_ms * 1000, content="Memory blocks, mostly.",
                                   reply={"root": reference, "parent": reference}))
        first_root = first_root or uri(person, root)
    store.apply(IngestBatch(blips=blips(*frames)))
    store.save_identities(identities)
    return scout, first_root


def test_the_page_shows_short_uris_and_human_latencies_in_a_table_of_reasonable_height(tmp_path: Path, browser):
    store = Store(tmp_path / "s.duckdb")
    scout, first_root = thread_history(store)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(store.path)},
                                      "agents": [{"name": "scout", "agent_id": "agent-1", "did": scout}]}))
    made = subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "analytics", "html",
                           str(tmp_path / "report.html")], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=180)
    assert made.returncode == 0, made.stderr
    page = (tmp_path / "report.html").read_text()
    rkey_of_first = first_root.rpartition("/")[2]
    assert f"<a class='whole' href='{first_root}' title='{first_root}'>person-0.test/{rkey_of_first}</a>" in page

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        view = browser.open(f"http://127.0.0.1:{server.server_port}/report.html",
                            expect=["threads", f"person-0.test/{rkey_of_first}", "3 min 16 s", "204 ms"],
                            screenshot="analytics-report", measure=["#threads table", "#latency table"])
    finally:
        server.shutdown()
        server.server_close()
    assert "196097" not in view.text and "at://" not in view.text
    threads = view.sizes["#threads table"]
    # 20 rows of one or two lines each; with whole at-uris the table was ~4,500 px tall
    assert threads is not None and threads["height"] < 60 * (THREADS + 1), threads
    assert view.sizes["#latency table"]["width"] <= 1100  # as wide as the page, no wider
