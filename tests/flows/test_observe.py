"""What the dispatch and publish flows show in Prefect (real Prefect server; fake Letta, real PDS): task runs
named for their agent's windows (a round of them) or reply that end with what came of it, each window a
line of its round's log, no made-up dependencies between them, a table artifact that follows within
seconds, the run's state message while an agent is blocked, and events when an agent's circuit opens,
with the agent as the resource."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from blipflow.control.circuits import Circuits
from blipflow.control.engine import ControlPlane
from blipflow.model.ledger import Circuit
from tests.dispatch.test_dispatcher import HUMAN, post
from tests.publish.test_publisher import control_url, ingested, posts, queue
from tests.support.agent_accounts import agent_account
from tests.support.fake_letta import FakeLetta
from tests.support.fed_stores import FedStores
from tests.support.ingest_process import PROJECT_ROOT, wait_for
from tests.support.prefect_server import PrefectServer

RUN_DISPATCH_UNTIL_IDLE = ("import sys; from flows.dispatch import dispatch; "
                           "state = dispatch(config_file=sys.argv[1], until_idle=True, return_state=True); "
                           "print(state.state_details.flow_run_id, state.result())")
RUN_DISPATCH = "import sys; from flows.dispatch import dispatch; dispatch(config_file=sys.argv[1])"
FOLLOWS = 10.0  # seconds within which the table artifact shows a window delivered (it used to be 60)
ROUND_NAME = re.compile(r"^scout: windows from [0-9a-f]{8}$")
WINDOW_LINE = re.compile(r"^window ([0-9a-f]{8}): (.*)$")


def run_env(server: PrefectServer) -> dict[str, str]:
    """As a deployment's run has it (prefect.yaml): blipflow's own log lines reach the run's log."""
    return {**server.env(), "PREFECT_LOGGING_EXTRA_LOGGERS": "blipflow"}


def dispatched_until_idle(server: PrefectServer, config: Path) -> tuple[str, int]:
    """Run dispatch until idle in a process of its own, as a deployment's run is (its events leave with it):
    its flow run's id and how many windows it delivered."""
    run = subprocess.run([sys.executable, "-c", RUN_DISPATCH_UNTIL_IDLE, str(config)], cwd=PROJECT_ROOT,
                         env=run_env(server), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    flow_run_id, delivered = run.stdout.split()
    return flow_run_id, int(delivered)


@contextmanager
def long_running_dispatch(server: PrefectServer, config: Path, log_path: Path) -> Iterator[dict]:
    """Dispatch running until stopped, in a process of its own; its flow run as the server has it."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", RUN_DISPATCH, str(config)], cwd=PROJECT_ROOT,
                                   env=run_env(server), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        def started() -> dict | None:
            assert process.poll() is None, f"dispatch exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
            runs = server.found("/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
                                                      "limit": 200})
            return next((run for run in runs if run["parameters"].get("config_file") == str(config)), None)
        yield wait_for(started, 120, "the dispatch run to start")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def task_runs_of(server: PrefectServer, flow_run_id: str) -> list[dict]:
    return server.found("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})


def windows_told(server: PrefectServer, rounds: list[dict]) -> dict[str, str]:
    """What the rounds' logs say each window came to: the start of its id → `1 blip → 1 reply, 204 ms`."""
    lines = server.found("/logs/filter", {"logs": {"task_run_id": {"any_": [run["id"] for run in rounds]}}})
    return {match[1]: match[2] for match in (WINDOW_LINE.match(line["message"]) for line in lines) if match}


def says_in_its_log(server: PrefectServer, task_run: dict) -> None:
    """The task run's log has a line saying what its state message says (logs reach the API in batches)."""
    def logged() -> bool:
        lines = server.found("/logs/filter", {"logs": {"task_run_id": {"any_": [task_run["id"]]}}})
        return task_run["state"]["message"] in [line["message"] for line in lines]
    wait_for(logged, 30, f"{task_run['state']['message']!r} in the log of {task_run['name']}")


def states_of(server: PrefectServer, flow_run_id: str) -> list[tuple[str, str | None]]:
    """The run's states so far, oldest first: (type, message)."""
    response = httpx.get(f"{server.api_url}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=30)
    response.raise_for_status()
    return [(state["type"], state["message"] or None) for state in response.json()]


def windows_table(server: PrefectServer, flow_run_id: str) -> list[list[dict]]:
    """The data of each dispatch-windows table artifact of the run."""
    artifacts = server.found("/artifacts/filter", {"artifacts": {"key": {"any_": ["dispatch-windows"]},
                                                                 "flow_run_id": {"any_": [flow_run_id]}}})
    return [json.loads(artifact["data"]) for artifact in artifacts]


def test_each_window_is_a_line_of_its_rounds_task_run_that_says_what_came_of_it(tmp_path, prefect_server):
    fake = FakeLetta().start()
    try:
        config = fake.config(tmp_path, [{"name": "scout", "agent_id": fake.create_agent(),
                                         "max_replies_per_minute": 100}])
        store = FedStores.beside(tmp_path / "s.duckdb")
        for n in range(10):  # enough windows of one agent that Prefect used to link some to an earlier one
            post(store, HUMAN, f"hello {n} [[silent]]" if n == 3 else f"hello {n}")
        flow_run_id, delivered = dispatched_until_idle(prefect_server, config)
    finally:
        fake.stop()
    assert delivered == 10

    windows = store.rows("SELECT id, state FROM windows ORDER BY created_at")
    rounds = task_runs_of(prefect_server, flow_run_id)
    assert all(ROUND_NAME.match(run["name"]) for run in rounds)

    def every_windows_line() -> dict[str, str]:  # logs reach the API in batches
        told = windows_told(prefect_server, rounds)
        return told if len(told) == len(windows) else {}
    told = wait_for(every_windows_line, 30, "a line for each window in the rounds' logs")
    assert sorted(told) == sorted(window[:8] for window, _ in windows)
    for window, state in windows:
        expected = r"1 blip → silent, \d+ ms" if state == "silent" else r"1 blip → 1 reply, \d+ ms"
        assert re.fullmatch(expected, told[window[:8]])
    assert sum(state == "silent" for _, state in windows) == 1
    for run in rounds:
        assert run["state"]["type"] == "COMPLETED"
        assert run["task_inputs"] == {"dispatcher": [], "windows": []}, f"{run['name']} has made-up upstream runs"
        says_in_its_log(prefect_server, run)
    assert states_of(prefect_server, flow_run_id)[-1] == ("COMPLETED", "delivered 10 windows")


def test_dispatch_with_no_agents_ends_saying_so(tmp_path, prefect_server):
    from flows.dispatch import dispatch

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "s.duckdb")}, "agents": []}))
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        state = dispatch(config_file=str(config), return_state=True)
    assert state.is_completed()
    assert state.message == "no agents configured: nothing to dispatch"
    assert state.result() == 0


def test_the_dispatch_table_follows_within_seconds(tmp_path, prefect_server):
    fake = FakeLetta().start()
    try:
        config = fake.config(tmp_path, [{"name": "scout", "agent_id": fake.create_agent()}])
        store = FedStores.beside(tmp_path / "s.duckdb")
        with long_running_dispatch(prefect_server, config, tmp_path / "dispatch.log") as run:
            for n in (1, 2):
                post(store, HUMAN, f"question {n}")
                wait_for(lambda: [len(table) for table in windows_table(prefect_server, run["id"])] == [n],
                         FOLLOWS, f"window {n} in the run's dispatch-windows table")
    finally:
        fake.stop()
    [table] = windows_table(prefect_server, run["id"])  # one artifact, kept current, not a version per refresh
    assert [(row["agent"], row["blips"], row["replies"], row["outcome"]) for row in table] == [
        ("scout", 1, 1, "answered")] * 2


def test_a_long_running_dispatch_says_while_an_agents_circuit_is_open(tmp_path, prefect_server):
    fake = FakeLetta().start()
    try:
        config = fake.config(tmp_path, [{"name": "sleeper", "agent_id": fake.create_agent()}],
                             dispatch={"breaker_cooldown": 3})
        store = FedStores.beside(tmp_path / "s.duckdb")
        # as an earlier process left it, with the failure that opened it
        Circuits(store.plane).save("sleeper", Circuit("open", 1, datetime.now(timezone.utc),
                                                      "Letta refused the API key (HTTP 401)"))
        post(store, HUMAN, "anyone there?")
        with long_running_dispatch(prefect_server, config, tmp_path / "dispatch.log") as run:
            blocked = ("RUNNING", "blocked: sleeper (circuit open: Letta refused the API key (HTTP 401); "
                                  "retried every 3 s)")
            # the circuit lets one call through after 3 s; it is answered and the circuit closes
            wait_for(lambda: states_of(prefect_server, run["id"])[-2:] == [blocked, ("RUNNING", None)], 60,
                     "the run's state message to say sleeper is blocked, then nothing")
    finally:
        fake.stop()
    assert store.rows("SELECT state FROM windows") == [("answered",)]


def test_a_publish_run_says_which_agents_have_no_account_to_post_as(tmp_path, prefect_server):
    from flows.publish import publish

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(tmp_path / "s.duckdb")},
                                      "agents": [{"name": "mute", "agent_id": "agent-1"}]}))
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        state = publish(config_file=str(config), until_idle=True, return_state=True)
    assert states_of(prefect_server, str(state.state_details.flow_run_id))[-2:] == [
        ("RUNNING", "blocked: mute (no account: set its handle and app_password)"),
        ("COMPLETED", "posted 0 replies")]


def test_each_reply_is_a_task_run_named_for_it_that_says_where_it_went(tmp_path, atproto_network, human_account,
                                                                      prefect_server):
    from flows.publish import publish

    herald = agent_account(atproto_network, "herald")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "control": {"url": control_url(tmp_path)}, "bluesky": {"pds_uri": atproto_network.pds_url},
        "publish": {"max_blip_length": 40},
        "agents": [herald.config("herald", "agent-1"),
                   {**herald.config("refused", "agent-2"), "app_password": "nope-nope-nope"}]}))
    plane = ControlPlane(control_url(tmp_path))
    question = ingested(plane, atproto_network, human_account, "two answers, please")
    short, long = queue(plane, "herald", [question[0]], "a short one",
                        "a long one that goes out as two blips of at most forty characters")
    [never] = queue(plane, "refused", [question[0]], "never posted")
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        state = publish(config_file=str(config), until_idle=True, return_state=True)
    assert state.message == "posted 2 replies"

    uris = {post.reply_id: post.uri for post in posts(plane) if post.part == 0}
    flow_run_id = str(state.state_details.flow_run_id)

    def all_three_ended() -> list[dict]:  # the server records task runs from events, a moment after they end
        runs = task_runs_of(prefect_server, flow_run_id)
        return runs if len(runs) == 3 and all(run["state_type"] in ("COMPLETED", "FAILED") for run in runs) else []

    task_runs = wait_for(all_three_ended, 30, "the three task runs recorded", 0.5)
    told = {run["name"]: run["state"]["message"] for run in task_runs}
    refused = "the PDS refused the handle or app password (HTTP 401 AuthenticationRequired)"
    assert told.pop(f"refused: reply 1 ({never[:8]})").endswith(refused)
    assert told == {
        f"herald: reply 1 ({short[:8]})": f"posted as {uris[short]}",
        f"herald: reply 2 ({long[:8]})": f"2 blips posted, the first {uris[long]}",
    }
    for run in task_runs:
        assert run["task_inputs"] == {"publisher": [], "reply": []}
        if run["state_type"] == "COMPLETED":
            says_in_its_log(prefect_server, run)
    blocked = ("RUNNING", f"blocked: refused ({refused}; its replies wait for working credentials)")
    assert blocked in states_of(prefect_server, flow_run_id)


def test_dispatch_leaves_a_table_artifact_and_circuit_events(tmp_path, prefect_server):
    fake = FakeLetta().start()
    try:
        config = fake.config(tmp_path, [{"name": "scout", "agent_id": fake.create_agent()},
                                        {"name": "ghost", "agent_id": "agent-unknown"}],
                             dispatch={"breaker_failures": 1})
        post(FedStores.beside(tmp_path / "s.duckdb"), HUMAN, "anyone there?")
        assert dispatched_until_idle(prefect_server, config)[1] == 1
    finally:
        fake.stop()

    [artifact] = prefect_server.found("/artifacts/latest/filter",
                     {"artifacts": {"key": {"any_": ["dispatch-windows"]}}, "limit": 1})
    assert artifact["type"] == "table"
    [row] = [row for row in json.loads(artifact["data"]) if row["agent"] == "scout"]
    assert (row["blips"], row["replies"], row["outcome"]) == (1, 1, "answered")
    assert row["handed_for"] == "selected"  # the default strategy, broadcast, selected every agent

    deadline = time.monotonic() + 30  # the server files events a moment after they arrive
    while True:
        events = prefect_server.found("/events/filter",
                     {"filter": {"event": {"prefix": ["blipflow.agent.circuit."]},
                                 "any_resource": {"id": ["blipflow.agent.ghost"]}}, "limit": 10})
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(e["event"], e["resource"]["prefect.resource.id"]) for e in events] == [
        ("blipflow.agent.circuit.open", "blipflow.agent.ghost")]
    assert events[0]["payload"] == {"failures": 1, "cooldown_seconds": 60.0,
                                    "reason": "no such agent on the Letta server (HTTP 404)"}


def test_ingest_replaying_a_backlog_shows_how_far_it_has_caught_up(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from blipflow.model.notices import Notice
    from flows.observe import IngestObserver

    def progress(lag: float) -> Notice:
        return Notice("blipflow.ingest.progress", "blipflow.source.test", {
            "events": 10, "stored": 10, "bad": 0, "events_per_second": 2.0, "lag_seconds": lag, "last_event_seconds_ago": 0.1, "connects": 1,
            "disconnects": 0, "store_retries": 0, "received_total": 10, "stored_total": 10, "bad_total": 0})

    @flow
    def replaying() -> list[float]:
        observe = IngestObserver()
        seen = []
        with get_client(sync_client=True) as client:
            for lag in (600.0, 300.0, 0.4):
                observe(progress(lag))
                [bar] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-catch-up"])))
                seen.append(bar.data)
        return seen

    assert replaying() == [0.0, 50.0, 100.0]
