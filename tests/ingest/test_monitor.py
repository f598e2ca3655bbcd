"""`blipflow monitor` as a real process: blips shown live from the Jetstream stand-in of a real local PDS,
authors resolved through the real PLC, and a prompt, quiet stop on Ctrl-C or SIGTERM even when a peer
has stopped answering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.ingest_process import PROJECT_ROOT, write_config
from tests.support.jetstream_standin import JetstreamStandin
from tests.support.trickling_peer import TricklingPeer

STOPS_WITHIN = 5.0  # seconds from the signal to the exit, whatever a peer does


class Monitor:
    """One `blipflow monitor --dids AUTHOR` process; what it prints is collected as it comes."""

    def __init__(self, config: Path, author_did: str, output: str = "human") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "-c", str(config), "monitor", "--output", output,
             "--dids", author_did],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.process.stdout.readline, "")),
                         daemon=True).start()

    def shows(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self, sig: signal.Signals) -> str:
        """Send `sig` and wait, at most STOPS_WITHIN seconds, for the process to end; its stderr."""
        self.process.send_signal(sig)
        try:
            return self.process.communicate(timeout=STOPS_WITHIN)[1]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"blipflow monitor still running {STOPS_WITHIN} s after {sig.name}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def post_until(atproto_network, condition, posts, timeout: float = 120.0) -> None:
    """The monitor starts live, at the end of the stream: keep making `posts` (author, text) until
    `condition` holds. (A loaded machine can take half a minute just to start the process.)"""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"nothing came through within {timeout} s"
        for author, text in posts:
            atproto_network.post_blip(author, text)
        time.sleep(0.5)


@pytest.mark.parametrize("output", ["json", "human"])
def test_monitor_prints_blips_live_and_stops_on_ctrl_c(tmp_path, atproto_network, jetstream, output):
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                          store_path=tmp_path / "identities.duckdb")
    ivan = atproto_network.create_account("ivan")
    judy = atproto_network.create_account("judy")
    monitor = Monitor(config, ivan.did, output)
    try:
        post_until(atproto_network, lambda: monitor.shows("from ivan"),
                   [(judy, "from judy, filtered out"), (ivan, "from ivan")])
        err = monitor.stop(signal.SIGINT)
    finally:
        monitor.kill()
    assert monitor.process.returncode == 0, err
    assert "Traceback" not in err
    text = "".join(monitor.lines)
    assert "from judy" not in text
    if output == "json":
        shown = json.loads(next(line for line in monitor.lines if "from ivan" in line))
        assert shown["handle"] == ivan.handle and shown["did"] == ivan.did
    else:
        assert f"author: {ivan.handle}" in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_monitor_while_an_identity_lookup_hangs(tmp_path, atproto_network, jetstream, sig):
    ivan = atproto_network.create_account("ivan")
    with TricklingPeer() as plc:
        config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                              store_path=tmp_path / "identities.duckdb", bluesky={"plc_uri": plc.url})
        monitor = Monitor(config, ivan.did)
        try:
            post_until(atproto_network, lambda: plc.asked_for(ivan.did), [(ivan, "from ivan")])  # it now hangs
            err = monitor.stop(sig)
        finally:
            monitor.kill()
    assert monitor.process.returncode == 0, err
    assert "Traceback" not in err


def test_ctrl_c_stops_the_monitor_when_jetstream_no_longer_answers(tmp_path, atproto_network):
    standin = JetstreamStandin.start(atproto_network.pds_ws_url, log_path=tmp_path / "standin.log")
    try:
        config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=standin.url,
                              store_path=tmp_path / "identities.duckdb")
        ivan = atproto_network.create_account("ivan")
        monitor = Monitor(config, ivan.did)
        try:
            post_until(atproto_network, lambda: monitor.shows("from ivan"), [(ivan, "from ivan")])
            os.kill(standin.pid, signal.SIGSTOP)  # connected, but it will not answer the close
            try:
                err = monitor.stop(signal.SIGINT)
            finally:
                os.kill(standin.pid, signal.SIGCONT)
        finally:
            monitor.kill()
    finally:
        standin.stop()
    assert monitor.process.returncode == 0, err
    assert "Traceback" not in err
