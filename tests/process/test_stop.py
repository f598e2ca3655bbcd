"""A clean stop, as real processes: SIGTERM (what systemd, Docker or `kill` send) and a terminal's Ctrl-C
(SIGINT to the whole process group) end each long-running command within 5 s, exit 0, with no traceback
and no "Error logging to API", a blip received just before the stop stored; and a deployment run
cancelled under a process worker ends Cancelled with nothing lost and no traceback in the worker's output.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.states import Cancelling

from blipflow.store.history import Store
from tests.flows.test_deployments import deployments, run_of, state_of, worker  # noqa: F401 - fixtures
from tests.support.frames import ALICE, commit_frame, uri
from tests.support.ingest_process import BlipflowProcess, wait_for
from tests.support.jetstream_standin import JetstreamStandin
from tests.support.prefect_server import PrefectServer, api_client

pytestmark = pytest.mark.process

STOPS_WITHIN = 5.0  # seconds, signal to exit
FLUSH_INTERVAL = 3.0  # a blip received just before the stop is still in memory, not yet in the store
AGENT = {"name": "scout", "agent_id": "agent-1", "did": "did:plc:scout0000000000000000000"}
# what each logs once its loop takes the signals
LONG_RUNNING = {"run": "ingest starting", "dispatch": "looking for work every",
                "publish-replies": "looking for work every"}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JetstreamStandin]:
    """A Jetstream with nothing in its log: what the test injects is all ingest receives."""
    folder = tmp_path_factory.mktemp("standin")
    (folder / "none.jsonl").write_text("")
    process = JetstreamStandin.start(events_file=folder / "none.jsonl", log_path=folder / "standin.log")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def config(tmp_path: Path, standin: JetstreamStandin) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "store": {"path": str(tmp_path / "s.duckdb")},
        "jetstream": {"instances": [standin.url], "reconnect_delay": 0.2, "max_reconnect_delay": 1.0},
        "ingest": {"flush_interval": FLUSH_INTERVAL},
        "letta": {"base_url": "http://127.0.0.1:9"},  # never called: no blip is stored for dispatch
        "bluesky": {"plc_uri": "http://127.0.0.1:9"},
        "agents": [AGENT],  # no account: publish leaves replies in the outbox, and there are none
    }))
    return path


@pytest.fixture(scope="module")
def temporary_server_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the runs with Prefect's temporary server: its database is set up once."""
    return tmp_path_factory.mktemp("temporary-prefect")


def without_prefect_api(home: Path) -> dict[str, str]:
    """A user's shell with no PREFECT_API_URL: Prefect starts its temporary local server."""
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    # a start-up timeout for this busy machine, not for the stop under test
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240"}


def received_just_before(standin: JetstreamStandin, store_path: Path, rkey: str) -> str:
    """A blip through the stream to ingest, left in its memory (FLUSH_INTERVAL); its at-uri."""
    assert standin.inject(commit_frame(ALICE, rkey, time.time_ns() // 1000, content="just before the stop")) >= 1
    time.sleep(0.5)
    assert not Store(store_path).query_all("SELECT 1 FROM blips WHERE uri = ?", [uri(ALICE, rkey)])
    return uri(ALICE, rkey)


def stopped(process: BlipflowProcess, stop: signal.Signals, *, group: bool) -> float:
    """Send `stop` (to the whole process group, as a terminal's Ctrl-C does, if `group`); the seconds
    until the process exited 0."""
    started = time.monotonic()
    if group:
        os.killpg(process.pid, stop)
    else:
        process.signal(stop)
    code = process.wait(60)
    took = time.monotonic() - started
    assert code == 0, f"exit {code}:\n{process.log()[-3000:]}"
    return took


def assert_quiet(log: str) -> None:
    for noise in ("Traceback", "TerminationSignal", "Error logging to API", "unhandled exception"):
        assert noise not in log, f"{noise!r} in:\n{log[-3000:]}"


@pytest.mark.parametrize("command", list(LONG_RUNNING))
def test_sigterm_stops_a_long_running_command_cleanly(tmp_path: Path, config: Path, standin: JetstreamStandin,
                                                      prefect_server: PrefectServer, command: str) -> None:
    process = BlipflowProcess(config, [command], prefect_server.env(), tmp_path / "command.log")
    try:
        process.wait_for_log(LONG_RUNNING[command], 180)
        late = received_just_before(standin, tmp_path / "s.duckdb", "late") if command == "run" else None
        took = stopped(process, signal.SIGTERM, group=False)
    finally:
        process.stop()
    log = process.log()
    assert took < STOPS_WITHIN, f"{took:.1f} s to stop"
    assert_quiet(log)
    assert "Finished in state Completed(" in log  # not Crashed: a stop asked for, not a failure
    if late is not None:
        assert Store(tmp_path / "s.duckdb").query_all("SELECT content FROM blips WHERE uri = ?", [late]) == [
            ("just before the stop",)]


@pytest.mark.parametrize("command", list(LONG_RUNNING))
def test_ctrl_c_stops_a_long_running_command_and_prefects_temporary_server(
        tmp_path: Path, config: Path, standin: JetstreamStandin, temporary_server_home: Path, command: str) -> None:
    process = BlipflowProcess(config, [command], without_prefect_api(temporary_server_home), tmp_path / "command.log")
    try:
        process.wait_for_log(LONG_RUNNING[command], 300)
        late = received_just_before(standin, tmp_path / "s.duckdb", "late") if command == "run" else None
        took = stopped(process, signal.SIGINT, group=True)
        # the temporary server went with it: nothing is left of the process group
        wait_for(lambda: not group_alive(process.pid), 10, "the temporary server to stop")
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.stop()
    log = process.log()
    assert "Starting temporary server" in log
    assert took < STOPS_WITHIN, f"{took:.1f} s to stop"
    assert_quiet(log)
    if late is not None:
        assert Store(tmp_path / "s.duckdb").query_all("SELECT content FROM blips WHERE uri = ?", [late]) == [
            ("just before the stop",)]


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_cancelled_ingest_under_a_worker_ends_cancelled_quietly_with_nothing_lost(
        tmp_path: Path, config: Path, standin: JetstreamStandin, prefect_server: PrefectServer,
        deployments: dict, worker) -> None:  # noqa: F811 - the fixtures imported above
    with api_client(prefect_server) as client:
        run = run_of(client, deployments["ingest"], config_file=str(config))
        wait_for(lambda: "ingest connected to" in worker_log(tmp_path), 180, "the ingest run to connect")
        late = received_just_before(standin, tmp_path / "s.duckdb", "cancelled")
        client.set_flow_run_state(run.id, Cancelling(), force=True)  # what `prefect flow-run cancel` does
        assert state_of(client, run, "Cancelled") == "Cancelled"
    assert Store(tmp_path / "s.duckdb").query_all("SELECT content FROM blips WHERE uri = ?", [late]) == [
        ("just before the stop",)]
    wait_for(lambda: "ingest stopped: " in worker_log(tmp_path), 30, "the run's last lines")
    assert_quiet(worker_log(tmp_path))


def worker_log(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")
