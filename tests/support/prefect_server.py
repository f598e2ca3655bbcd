"""A real Prefect server on 127.0.0.1 for the test session (SQLite in a temporary PREFECT_HOME).

Processes under test point at it with `PREFECT_API_URL` instead of each starting Prefect's temporary
server (~16 s apiece).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.prefect_api import send_logs_and_events

REPO_ROOT = Path(__file__).resolve().parents[2]
QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PrefectServer:
    process: subprocess.Popen
    api_url: str
    home: Path
    log_path: Path

    def env(self) -> dict[str, str]:
        """Environment for a process that should use this server."""
        return {**os.environ, **QUIET_PREFECT, "PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def found(self, path: str, body: dict) -> list[dict]:
        """What a filter query (POST .../filter) finds on this server: artifacts, or an events page's events."""
        response = httpx.post(f"{self.api_url}{path}", json=body, timeout=30)
        response.raise_for_status()
        found = response.json()
        return found["events"] if isinstance(found, dict) else found

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_prefect_server(home: Path, timeout: float = 90.0) -> PrefectServer:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = home / "server.log"
    # The UI it serves must call this server's API: `--port` alone leaves the UI on the default 4200.
    env = {**os.environ, **QUIET_PREFECT, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_UI_ENABLED": "true", "PREFECT_SERVER_UI_API_URL": api_url}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    server = PrefectServer(process, api_url, home, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"prefect server not healthy after {timeout} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(autouse=True)
def prefect_workers_start_afresh() -> Iterator[None]:
    """Prefect keeps one events worker per process, bound to the API it first sent to (its key holds no URL):
    after a test whose flows reported to another server (a harness's temporary one, since stopped), a later
    test's events would keep going there, and its task runs never be recorded. Each test ends its workers."""
    yield
    send_logs_and_events()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        # what flows run in this process logged is sent while the server is there to take it, or Prefect's
        # log worker ends the session retrying it ("Error logging to API")
        send_logs_and_events()
        server.stop()


def declared_deployments() -> list[dict]:
    """The deployments prefect.yaml declares."""
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]


def run_prefect(server: PrefectServer, *args: str) -> None:
    """The prefect CLI as a user runs it from the repository root, against `server`."""
    # prefect.yaml's pull step records `{{ $PWD }}`: the repository root, as in a user's shell there
    env = {**server.env(), "PWD": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=REPO_ROOT, env=env, check=False,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


def deploy_all(server: PrefectServer) -> list[str]:
    """What the README says to do: create the work pools, then `prefect deploy --all`; the deployments' names."""
    deployments = declared_deployments()
    for pool in sorted({deployment["work_pool"]["name"] for deployment in deployments}):
        # --overwrite: other tests of the session may have created the pool already
        run_prefect(server, "work-pool", "create", pool, "--type", "process", "--overwrite")
    run_prefect(server, "deploy", "--all")
    return [deployment["name"] for deployment in deployments]


@contextmanager
def api_client(server: PrefectServer) -> Iterator[SyncPrefectClient]:
    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        yield client
