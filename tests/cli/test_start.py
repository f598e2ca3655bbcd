"""A stop asked for while the `blipflow` command is still starting (importing its libraries) ends it, quietly:
one of those libraries swallows a KeyboardInterrupt raised during its import, which used to lose the Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.support.ingest_process import PROJECT_ROOT

STOP_SECONDS = 5.0


@pytest.mark.process
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_the_command_starts_ends_it(tmp_path, stop) -> None:
    config = tmp_path / "config.yaml"  # a Jetstream nobody answers: left running, the monitor would retry forever
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "s.duckdb")},
                                      "jetstream": {"instances": ["ws://127.0.0.1:9"]}}))
    monitor = subprocess.Popen([sys.executable, "-m", "cli", "-c", str(config), "monitor"], cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)  # well inside the imports, which take a second or more
    monitor.send_signal(stop)
    try:
        out, err = monitor.communicate(timeout=STOP_SECONDS + 10)  # the imports finish first
    except subprocess.TimeoutExpired:
        monitor.kill()
        out, err = monitor.communicate()
        pytest.fail(f"blipflow monitor still running after {stop.name} sent while it started:\n{err[-2000:]}")
    assert monitor.returncode == 0, err
    assert "Traceback" not in err and "connection failed" not in err  # it ended before it began
