"""What the dispatch flow shows in Prefect (real Prefect server, fake Letta): a table artifact of the windows
it delivered, and events when an agent's circuit opens, with the agent as the resource."""

from __future__ import annotations

import json
import subprocess
import sys
import time


from blipflow.store import Store
from tests.support.fake_letta import FakeLetta
from tests.support.ingest_process import PROJECT_ROOT
from tests.test_dispatch import HUMAN, post


RUN_DISPATCH_UNTIL_IDLE = "import sys; from flows.dispatch import dispatch; print(dispatch(config_file=sys.argv[1], until_idle=True))"


def test_dispatch_leaves_a_table_artifact_and_circuit_events(tmp_path, prefect_server):
    fake = FakeLetta().start()
    try:
        config = fake.config(tmp_path, [{"name": "scout", "agent_id": fake.create_agent()},
                                        {"name": "ghost", "agent_id": "agent-unknown"}],
                             dispatch={"breaker_failures": 1})
        post(Store(tmp_path / "s.duckdb"), HUMAN, "anyone there?")
        # a process of its own, as a deployment's run is: its events leave with it
        run = subprocess.run([sys.executable, "-c", RUN_DISPATCH_UNTIL_IDLE, str(config)], cwd=PROJECT_ROOT,
                             env=prefect_server.env(), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.strip() == "1"
    finally:
        fake.stop()

    [artifact] = prefect_server.found("/artifacts/latest/filter",
                     {"artifacts": {"key": {"any_": ["dispatch-windows"]}}, "limit": 1})
    assert artifact["type"] == "table"
    [row] = [row for row in json.loads(artifact["data"]) if row["agent"] == "scout"]
    assert (row["blips"], row["replies"], row["outcome"]) == (1, 1, "answered")

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
    assert events[0]["payload"] == {"failures": 1, "cooldown_seconds": 60.0}


def test_ingest_replaying_a_backlog_shows_how_far_it_has_caught_up(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from blipflow.notices import Notice
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
