"""`blipflow analytics` as people run it: a real process on the hand-checked history (see
tests/support/analytics_history.py), every output format, charts, the HTML page, the export, and one
clear line for every mistake."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from blipflow.control.engine import ControlPlane
from blipflow.store.history import Store
from tests.support.analytics_history import SAGE, SCOUT, build_history, control_url
from tests.support.ingest_process import PROJECT_ROOT

pytestmark = pytest.mark.process


def write_config(folder: Path, store_path: Path) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"path": str(store_path)}, "control": {"url": control_url(folder)}, "agents": [
        {"name": "scout", "agent_id": "agent-scout", "did": SCOUT},
        {"name": "sage", "agent_id": "agent-sage", "did": SAGE}]}))
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    store = Store(folder / "history.duckdb")
    build_history(store, ControlPlane(control_url(folder)))
    return write_config(folder, store.path)


def blipflow(config: Path, *args: str, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "-c", str(config), "analytics", *args],
                          cwd=cwd or PROJECT_ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def test_csv_json_and_table_output(config: Path) -> None:
    latency = blipflow(config, "latency", "--output", "csv")
    assert latency.returncode == 0, latency.stderr
    found = list(csv.DictReader(io.StringIO(latency.stdout)))
    assert [(row["agent"], row["replies"], row["median_ms"], row["p90_ms"]) for row in found] == [
        ("scout", "2", "2000", "2400"), ("sage", "2", "7000", "9400")]

    edges = blipflow(config, "who-answers-whom", "--agent", "scout", "--output", "json")
    assert [(edge["source"], edge["target"], edge["replies"]) for edge in map(json.loads, edges.stdout.splitlines())] \
        == [("bob.test", "scout", 1), ("scout", "alice.test", 1), ("scout", "bob.test", 1)]

    threads = blipflow(config, "threads", "--top", "2")
    assert threads.returncode == 0, threads.stderr
    lines = threads.stdout.splitlines()
    assert lines[0].strip() == "threads: the beginning to now, per day"
    assert [line.split("│")[4].strip() for line in lines if "stream.thought.blip" in line] == ["6", "3"]

    per_hour = blipflow(config, "activity", "--bucket", "hour", "--since", "2025-10-09T09:00Z", "--until", "2025-10-10",
                        "--output", "json")
    assert [(row["period"], row["author"], row["blips"]) for row in map(json.loads, per_hour.stdout.splitlines())] == [
        ("2025-10-09T09:00:00Z", "alice.test", 1), ("2025-10-09T09:00:00Z", "bob.test", 1),
        ("2025-10-09T09:00:00Z", "sage", 1)]


def test_parquet_output(config: Path, tmp_path: Path) -> None:
    made = blipflow(config, "silence", "--output", "parquet", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == "wrote 2 rows to silence.parquet"
    assert pq.read_table(tmp_path / "silence.parquet").to_pylist()[1] == {
        "agent": "scout", "windows": 3, "answered": 1, "silent": 1, "failed": 1, "open": 0, "silence_rate": 0.5}
    blipflow(config, "errors", "--output", "parquet", "--to", str(tmp_path / "errors.parquet"))
    assert pq.read_table(tmp_path / "errors.parquet").column("calls").to_pylist() == [2, 4]


@pytest.mark.parametrize("report, suffix", [("activity", "png"), ("latency", "png"), ("who-answers-whom", "png"),
                                            ("silence", "svg")])
def test_charts(config: Path, tmp_path: Path, report: str, suffix: str) -> None:
    chart = tmp_path / f"{report}.{suffix}"
    made = blipflow(config, report, "--chart", str(chart), "--output", "csv")
    assert made.returncode == 0, made.stderr
    assert made.stderr.strip() == f"drew the {report} chart to {chart}"
    if suffix == "png":
        with Image.open(chart) as image:
            assert image.format == "PNG" and image.width >= 800 and image.height >= 150
            assert len(image.getcolors(1_000_000)) > 20  # drawn, not blank
    else:
        assert chart.read_text().lstrip().startswith("<?xml") and "<svg" in chart.read_text()


def test_a_first_run_of_matplotlib_leaves_the_output_to_blipflow(config: Path, tmp_path: Path) -> None:
    # A fresh machine: no font cache yet, so matplotlib builds one and logs that at INFO.
    fresh = tmp_path / "matplotlib"
    fresh.mkdir()
    chart = tmp_path / "activity.png"
    made = blipflow(config, "activity", "--chart", str(chart), "--output", "csv", env={"MPLCONFIGDIR": str(fresh)})
    assert made.returncode == 0, made.stderr
    assert list(fresh.glob("fontlist-*.json")), "matplotlib did not build its font cache here"
    assert made.stderr.strip() == f"drew the activity chart to {chart}"


def test_the_command_logs_its_own_news_and_only_warnings_from_libraries() -> None:
    speak = ("import logging; from blipflow.process.console_logging import show_own_messages_only; show_own_messages_only()\n"
             "for name in ('blipflow.dispatch', 'flows.serving', 'tasks.x', 'blocks.y', 'matplotlib.font_manager', 'httpx'):\n"
             "    logging.getLogger(name).info('news from %s', name)\n"
             "logging.getLogger('duckdb').warning('a warning from duckdb')\n")
    said = subprocess.run([sys.executable, "-c", speak], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert said.returncode == 0, said.stderr
    assert [line.split(" ", 2)[2] for line in said.stderr.splitlines()] == [
        "INFO blipflow.dispatch: news from blipflow.dispatch", "INFO flows.serving: news from flows.serving",
        "INFO tasks.x: news from tasks.x", "INFO blocks.y: news from blocks.y", "WARNING duckdb: a warning from duckdb"]


def test_one_html_page_with_every_chart(config: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    made = blipflow(config, "html", str(page), "--bucket", "hour")
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    assert text.count("<img alt=") == 4 and text.count("<section id=") == 7
    assert ("<td><span class='id'>did:plc:scout0000000000000000000</span></td><td>2</td>"
            "<td><span class='whole'>1.5 s</span></td>") in text


def test_export_twice(config: Path, tmp_path: Path) -> None:
    first = blipflow(config, "export", "--parquet", str(tmp_path / "parquet"))
    assert first.stderr.strip() == f"exported 12 blips in 2 changed days to {tmp_path / 'parquet'}"
    second = blipflow(config, "export", "--parquet", str(tmp_path / "parquet"))
    assert second.stderr.strip() == f"nothing changed since the last export to {tmp_path / 'parquet'}"


@pytest.mark.parametrize("args, message", [
    (["latency", "--since", "yesterdayy"],
     "blipflow: bad --since: 'yesterdayy' is not a date, a time or an age (e.g. 2025-10-09, 2025-10-09T08:00Z, 36h, 7d)"),
    (["latency", "--since", "2025-10-10", "--until", "2025-10-09"],
     "blipflow: bad --since/--until: 2025-10-10 00:00 UTC is not before 2025-10-09 00:00 UTC"),
    (["threads", "--agent", "nobody"], "blipflow: bad --agent: no agent named 'nobody' in the config (agents: scout, sage)"),
    (["errors", "--chart", "errors.png"],
     "blipflow: bad --chart: errors has no chart (charts: activity, latency, who-answers-whom, silence)"),
    (["latency", "--chart", "latency.jpg"], "blipflow: bad --chart: latency.jpg: name a .png, .svg or .pdf file"),
    (["latency", "--chart", "/no/such/folder/latency.png"],
     "blipflow: bad --chart: /no/such/folder/latency.png: no folder /no/such/folder"),
])
def test_a_mistake_is_one_line_and_exit_2(config: Path, args: list[str], message: str) -> None:
    made = blipflow(config, *args)
    assert (made.returncode, made.stderr.strip(), made.stdout) == (2, message, "")


def test_a_missing_broken_or_empty_store_says_so(tmp_path: Path) -> None:
    missing = blipflow(write_config(tmp_path, tmp_path / "missing.duckdb"), "latency")
    assert (missing.returncode, missing.stderr.strip()) == (
        1, f"blipflow: store {tmp_path / 'missing.duckdb'}: no such file yet (run `blipflow run` first)")
    assert not (tmp_path / "missing.duckdb").exists()

    not_a_store = tmp_path / "notes.duckdb"
    not_a_store.write_text("these are my notes, not a database")
    made = blipflow(write_config(tmp_path, not_a_store), "latency")
    assert made.returncode == 1 and len(made.stderr.strip().splitlines()) == 1, made.stderr
    assert made.stderr.startswith(f"blipflow: store {not_a_store}: ")

    empty = Store(tmp_path / "empty.duckdb")
    empty.counters()  # the file, with its tables and nothing in them
    made = blipflow(write_config(tmp_path, empty.path), "activity")
    assert (made.returncode, made.stdout) == (0, "")
    assert made.stderr.strip() == (f"activity: nothing to report for this selection (0 blips in {empty.path}, "
                                   f"0 dispatch windows in {control_url(tmp_path)})")
