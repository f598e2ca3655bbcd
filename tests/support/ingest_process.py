"""`blipflow run` as a real process under test: its config, its log, and stopping it by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, *, network: Any, jetstream_url: str, store_path: Path, **sections: dict) -> Path:
    """A config.yaml for the local network; `sections` merge over the defaults here."""
    config: dict[str, dict] = {
        "bluesky": {"pds_uri": network.pds_url, "plc_uri": network.plc_url},
        "jetstream": {"instances": [jetstream_url], "reconnect_delay": 0.2, "max_reconnect_delay": 1.0},
        "store": {"path": str(store_path)},
        "control": {"url": f"sqlite:///{path.parent / 'control.sqlite'}"},  # never one under the checkout's data/
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class BlipflowProcess:
    """One `python -m cli -c CONFIG ARGS...` process (the `blipflow` command), in its own process group."""

    def __init__(self, config: Path, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "-c", str(config), *args],
            cwd=PROJECT_ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and self.log().count(text) < count:
                raise AssertionError(f"process exited ({self.process.returncode}) before logging {text!r}:\n{self.log()[-3000:]}")
            return self.log().count(text) >= count

        wait_for(seen, timeout, f"{text!r} in {self.log_path}")

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.log_file.close()

    def stop(self) -> None:
        """Stop it, whatever state it is in (used in test teardown)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log_file.close()
