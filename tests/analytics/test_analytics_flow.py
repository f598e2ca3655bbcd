"""The analytics flow under Prefect's test harness: the day's report as artifacts and an HTML page, the
Parquet export refreshed; and the deployment that schedules it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.states import Failed

from blipflow.analytics.reports import reports
from blipflow.control.engine import ControlPlane
from blipflow.store.history import Store, StoreBusy, StoreError
from flows.analytics import analytics
from tasks.analytics import store_was_busy
from tests.support.analytics_history import SAGE, SCOUT, build_history, control_url
from tests.support.ingest_process import PROJECT_ROOT


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store = Store(tmp_path / "history.duckdb")
    build_history(store, ControlPlane(control_url(tmp_path)))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"path": str(store.path)}, "control": {"url": control_url(tmp_path)},
                                    "agents": [
        {"name": "scout", "agent_id": "agent-scout", "did": SCOUT},
        {"name": "sage", "agent_id": "agent-sage", "did": SAGE}]}))
    return path


def artifact(key: str) -> str:
    """The latest version's data: Markdown, or a table as JSON."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return sorted(found, key=lambda one: one.created)[-1].data


def test_the_daily_report_becomes_artifacts_a_page_and_a_fresh_export(prefect_harness, config: Path,
                                                                      tmp_path: Path) -> None:
    state = analytics(config_file=str(config), day="2025-10-09", export_dir=str(tmp_path / "parquet"),
                      html_dir=str(tmp_path / "reports"), return_state=True)
    assert state.is_completed(), state.message
    assert state.message == "2025-10-09: 7 reports; export: 2 days rewritten, 12 blips"

    daily = artifact("analytics-daily")
    assert daily.startswith("# blipflow analytics for 2025-10-09 (UTC)")
    for name in reports():
        assert f"## {name}\n" in daily
    assert "| scout | did:plc:scout0000000000000000000 | 2 | 1500 |" in daily  # latency, that day
    assert "| 2025-10-09 08:00:00 | memory | 6 | 1 |" in daily  # top terms per hour
    latency = json.loads(artifact("analytics-latency"))
    assert [(row["agent"], row["replies"], row["median_ms"]) for row in latency] == [("scout", 2, 2000.0),
                                                                                     ("sage", 2, 7000.0)]
    edges = json.loads(artifact("analytics-who-answers-whom"))
    assert [(edge["source"], edge["target"], edge["replies"]) for edge in edges] == [
        ("alice.test", "sage", 1), ("bob.test", "scout", 1), ("sage", "alice.test", 1), ("sage", "bob.test", 1),
        ("scout", "alice.test", 1), ("scout", "bob.test", 1)]  # sage's second answer to alice came the next day

    page = (tmp_path / "reports" / "analytics-2025-10-09.html").read_text()
    assert page.count("<img alt=") == 4 and "data:image/png;base64," in page
    assert (tmp_path / "parquet" / "blips" / "day=2025-10-09" / "blips.parquet").exists()

    again = analytics(config_file=str(config), day="2025-10-10", export_dir=str(tmp_path / "parquet"), html_dir=None,
                      return_state=True)
    assert again.message == "2025-10-10: 7 reports; export: 0 days rewritten, 0 blips"
    next_day = artifact("analytics-daily")
    assert f"## latency\n\n{reports()['latency'].summary}\n\n_Nothing to report._" in next_day  # a3 was edited
    assert "| 2025-10-10 10:00:00 | hello | 2 | 1 |" in next_day


@pytest.mark.parametrize("day, store, message", [
    ("2025-10-32", {}, "bad day: '2025-10-32' is not a date like 2025-10-09"),
    (None, {}, "store {missing}: no such file yet (run `blipflow run` first)"),
    (None, {"lock_timeout": "soon"},
     "bad config: {config}: store.lock_timeout: Input should be a valid number, unable to parse string as a number "
     "(got 'soon')"),
])
def test_a_bad_day_config_or_store_fails_the_run_with_one_line(prefect_harness, tmp_path: Path, day: str | None,
                                                                store: dict, message: str) -> None:
    missing = tmp_path / "missing.duckdb"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(missing), **store}}))
    state = analytics(config_file=str(config), day=day, export_dir=str(tmp_path / "parquet"), return_state=True)
    assert state.is_failed()
    assert state.message == message.format(missing=missing, config=config)
    assert not missing.exists()


def test_a_report_waits_out_another_process_holding_the_store(prefect_harness, tmp_path: Path) -> None:
    """Past the lock timeout the report's task fails as StoreBusy, and Prefect runs it again."""
    store = Store(tmp_path / "history.duckdb")
    build_history(store, ControlPlane(control_url(tmp_path)))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"path": str(store.path), "lock_timeout": 1},
                                      "control": {"url": control_url(tmp_path)}}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; db = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(4)", str(store.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        state = analytics(config_file=str(config), day="2025-10-09", export_dir=str(tmp_path / "parquet"),
                          html_dir=None, return_state=True)
    finally:
        holder.wait(30)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        runs = client.read_task_runs(flow_run_filter=this_run)
    attempts = {run.name: run.run_count for run in runs}
    assert attempts["report activity"] == 2 and attempts["report latency"] == 1


def test_only_a_busy_store_is_worth_another_try() -> None:
    assert store_was_busy(None, None, Failed(data=StoreBusy("store x: locked by process 1 for more than 1 s")))
    assert not store_was_busy(None, None, Failed(data=StoreError("store x: broken: Binder Error: no such column")))


def test_the_deployment_runs_the_flow_every_night() -> None:
    deployments = {entry["name"]: entry for entry in yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
                   ["deployments"]}
    deployment = deployments["analytics"]
    assert deployment["entrypoint"] == "flows/analytics.py:analytics"
    assert [schedule["cron"] for schedule in deployment["schedules"]] == ["15 0 * * *"]
    assert deployment["schedules"][0]["timezone"] == "UTC"
    assert set(deployment.get("parameters", {})) <= {"config_file", "day", "export_dir", "html_dir"}
