"""Where ingest stands on the stream, told truthfully: `blipflow run` as a real process under a real Prefect
server, fed by the Jetstream stand-in — live from a local PDS (a quiet stream), or replaying a file of old
events (a backfill with `--since`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from blipflow.ingest.ingester import since_cursor
from blipflow.store.history import Store
from tests.support.frames import commit_frame, uri
from tests.support.ingest_process import (
    PROJECT_ROOT,
    BlipflowProcess,
    wait_for,
    write_config,
)
from tests.support.jetstream_standin import JetstreamStandin

QUIET = 8.0  # seconds without an event; the old lag ("time since the last event") was this much by then
OLD = "did:plc:backfill000000000000000000"


def blipflow(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "-c", str(config), *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


def ingest_events(prefect_server, since: datetime) -> list[dict]:
    return prefect_server.found("/events/filter", {
        "filter": {"event": {"prefix": ["blipflow.ingest."]}, "occurred": {"since": since.isoformat()}},
        "limit": 50})


def catch_up_bars(prefect_server, since: datetime) -> list[dict]:
    bars = prefect_server.found("/artifacts/filter", {"artifacts": {"key": {"any_": ["ingest-catch-up"]}}})
    return [bar for bar in bars if datetime.fromisoformat(bar["created"]) >= since]


def test_a_quiet_stream_is_not_a_stream_ingest_is_behind(tmp_path, atproto_network, jetstream, prefect_server):
    began = datetime.now(timezone.utc)
    store_path = tmp_path / "blips.duckdb"
    config = write_config(tmp_path / "config.yaml", network=atproto_network, jetstream_url=jetstream.url,
                          store_path=store_path, ingest={"report_interval": 1.0})
    ivan = atproto_network.create_account("ivan")
    process = BlipflowProcess(config, ["run"], prefect_server.env(), tmp_path / "ingest.log")
    try:
        process.wait_for_log("ingest connected to")
        posted, _ = atproto_network.post_blip(ivan, "then nothing for a while")
        wait_for(lambda: Store(store_path).query_all("SELECT 1 FROM blips WHERE uri = ?", [posted]), 30, "the blip")
        time.sleep(QUIET)

        report = blipflow(config, "status", "--output", "json")
        assert report.returncode == 0, report.stderr
        ingest = json.loads(report.stdout)["ingest"]
        assert ingest["lag_seconds"] < 3.0  # the blip arrived about as it was made
        assert ingest["last_event_seconds_ago"] >= QUIET
        human = blipflow(config, "status").stdout
        [stream_line] = [line for line in human.splitlines() if line.startswith("stream")]
        assert "s ago," in stream_line and "behind the stream when it arrived" in stream_line

        def quiet_reports() -> list[dict]:
            reports = [event["payload"] for event in ingest_events(prefect_server, began)
                       if event["event"] == "blipflow.ingest.progress"]
            return [report for report in reports if (report["last_event_seconds_ago"] or 0) >= QUIET / 2]

        quiet = wait_for(quiet_reports, 30, "progress reports from the quiet stretch")
        assert all(report["events"] == 0 and report["lag_seconds"] is None for report in quiet)
    finally:
        process.stop()

    events = ingest_events(prefect_server, began)
    assert {event["event"] for event in events} >= {"blipflow.ingest.connected", "blipflow.ingest.progress"}
    # one resource per source, whatever the event; the endpoint is in the payload
    assert {event["resource"]["prefect.resource.id"] for event in events} == {"blipflow.source.jetstream"}
    connected = [event for event in events if event["event"] == "blipflow.ingest.connected"]
    assert {event["payload"]["endpoint"] for event in connected} == {jetstream.url}
    assert catch_up_bars(prefect_server, began) == []


def test_since_backfills_history_and_shows_catching_up(tmp_path, atproto_network, prefect_server):
    began = datetime.now(timezone.utc)
    now_us = int(time.time() * 1_000_000)
    ages = {"3h": timedelta(hours=3), "90m": timedelta(minutes=90), "30m": timedelta(minutes=30),
            "10m": timedelta(minutes=10)}
    frames = [commit_frame(OLD, rkey, now_us - int(age.total_seconds() * 1_000_000), content=f"said {rkey} ago")
              for rkey, age in ages.items()]
    events_file = tmp_path / "history.jsonl"
    events_file.write_bytes(b"\n".join(frames) + b"\n")
    standin = JetstreamStandin.start(events_file=events_file, log_path=tmp_path / "standin.log", timeout=30)
    try:
        def run(name: str, *args: str) -> tuple[Path, BlipflowProcess]:
            store_path = tmp_path / f"{name}.duckdb"
            config = write_config(tmp_path / f"{name}.yaml", network=atproto_network, jetstream_url=standin.url,
                                  store_path=store_path, ingest={"report_interval": 0.5})
            return store_path, BlipflowProcess(config, ["run", *args], prefect_server.env(), tmp_path / f"{name}.log")

        def stored(store_path: Path) -> set[str]:
            return {row[0] for row in Store(store_path).query_all("SELECT uri FROM blips")} if store_path.exists() else set()

        # a first ingest starts at the live end: none of the history
        first_store, first = run("first")
        try:
            first.wait_for_log("ingest starting at the live end of jetstream")
            first.wait_for_log("ingest connected to")
            time.sleep(2.0)
            assert stored(first_store) == set()
        finally:
            first.stop()

        since_store, backfill = run("since", "--since", "2h")
        try:
            backfill.wait_for_log("ingest connected to")
            wanted = {uri(OLD, rkey) for rkey in ("90m", "30m", "10m")}
            wait_for(lambda: stored(since_store) == wanted, 30, "the last two hours of history")
            # the replay was far behind the stream: a catch-up bar, full once the source had nothing more
            bars = wait_for(lambda: [bar for bar in catch_up_bars(prefect_server, began) if bar["data"] == 100.0],
                            30, "the catch-up bar at 100 %")
            assert len(bars) == 1 and "Replaying the stream from" in bars[0]["description"]
        finally:
            backfill.stop()

        cursor_store, by_cursor = run("cursor", "--since", str(now_us - 45 * 60 * 1_000_000))
        try:
            by_cursor.wait_for_log("ingest connected to")
            wait_for(lambda: stored(cursor_store) == {uri(OLD, "30m"), uri(OLD, "10m")}, 30, "history from the cursor")
        finally:
            by_cursor.stop()

        date_store, by_date = run("date", "--since", (datetime.now(timezone.utc) - timedelta(hours=4)).isoformat())
        try:
            by_date.wait_for_log("ingest connected to")
            wait_for(lambda: len(stored(date_store)) == 4, 30, "the whole history since the date")
        finally:
            by_date.stop()
    finally:
        standin.stop()


@pytest.mark.process
@pytest.mark.parametrize("since, says", [
    ("yesterdayy", "blipflow: bad --since: 'yesterdayy' is not a date, a time or an age"),
    ("9999999999999999999", "blipflow: bad --since: '9999999999999999999' is later than now"),
])
def test_a_bad_since_is_one_line(tmp_path, since, says):
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {{path: {tmp_path / 's.duckdb'}}}\n")
    result = blipflow(config, "run", "--since", since)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(says)


@pytest.mark.process
def test_a_firehose_since_is_a_seq(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"store: {{path: {tmp_path / 's.duckdb'}}}\n")
    result = blipflow(config, "run", "--source", "firehose", "--since", "2h")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "blipflow: bad --since: '2h': the firehose source starts from a cursor (its seq), not a date or an age"]


def test_since_is_an_age_a_date_a_time_or_a_cursor():
    now = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    micros = lambda moment: int(moment.timestamp() * 1_000_000)  # noqa: E731
    assert since_cursor("2h", "jetstream", now) == micros(now - timedelta(hours=2))
    assert since_cursor("2026-12-01", "jetstream", now) == micros(datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert since_cursor("2026-12-01T08:00+01:00", "jetstream", now) == micros(datetime(2026, 12, 1, 7, tzinfo=timezone.utc))
    assert since_cursor("1733500000000000", "jetstream", now) == 1733500000000000
    assert since_cursor(" 42 ", "firehose", now) == 42
