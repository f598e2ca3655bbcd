"""Analytics reports on a small history whose every figure was worked out by hand
(tests/support/analytics_history.py), on a real DuckDB file through the store's own paths."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from blipflow.analytics.export import MARKER, export_parquet
from blipflow.analytics.reports import (
    QUERIES_FOLDER,
    Bucket,
    Selection,
    day_selection,
    nothing_to_report,
    reports,
    run_report,
    selection,
)
from blipflow.analytics.window_copy import WINDOWS_VIEW, bring_up_to_date
from blipflow.control.engine import ControlPlane
from blipflow.model.failures import BadRequest
from blipflow.model.moments import parse_moment
from blipflow.store.history import Store, StoreError
from tests.support.analytics_history import (
    AGENTS,
    ALICE,
    BLIPS,
    BOB,
    SAGE,
    SCOUT,
    at,
    blip_uri,
    build_history,
)
from tests.support.frames import batch, commit_frame

NOW = datetime(2025, 10, 12, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The history's dispatch ledger, where dispatch keeps it."""
    plane = ControlPlane(f"sqlite:///{tmp_path_factory.mktemp('control') / 'control.sqlite'}")
    yield plane
    plane.dispose()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, plane: ControlPlane) -> Store:
    """Built once; tests that change it work on a copy (`own_history`)."""
    store = Store(tmp_path_factory.mktemp("history") / "history.duckdb", lock_timeout=10)
    build_history(store, plane)
    return store


@pytest.fixture
def own_history(history: Store, tmp_path: Path) -> Store:
    return Store(copy_of(history, tmp_path / "history.duckdb"), lock_timeout=10)


def copy_of(store: Store, path: Path) -> Path:
    """The store's file, with its write-ahead log if one is left."""
    shutil.copy(store.path, path)
    wal = store.path.with_name(store.path.name + ".wal")
    if wal.exists():
        shutil.copy(wal, path.with_name(path.name + ".wal"))
    return path


def rows(store: Store, plane: ControlPlane, report: str, chosen: Selection = Selection(), *,
         columns: tuple[str, ...] = ()) -> list:
    table = run_report(store, plane, reports()[report], chosen, AGENTS)
    if not columns:
        return table.to_pylist()
    return [tuple(row[column] for column in columns) for row in table.to_pylist()]


def day(number: int, hour: int = 0) -> datetime:
    return datetime(2025, 10, number, hour)


# -- the reports -----------------------------------------------------------------------------------


def test_every_report_is_a_documented_sql_file() -> None:
    assert set(reports()) == {"activity", "errors", "latency", "silence", "threads", "top-terms", "who-answers-whom"}
    for name, report in reports().items():
        first_line = (QUERIES_FOLDER / f"{name}.sql").read_text().splitlines()[0]
        assert first_line.startswith(f"-- {name}: ") and report.summary == first_line.split(": ", 1)[1]


def test_activity_per_author_and_agent_per_day(history: Store, plane: ControlPlane) -> None:
    assert rows(history, plane, "activity", columns=("period", "author", "agent", "blips", "replies")) == [
        (day(9), "scout", "scout", 3, 3),
        (day(9), "alice.test", None, 2, 1),
        (day(9), "bob.test", None, 2, 1),
        (day(9), "sage", "sage", 2, 2),
        (day(10), "alice.test", None, 1, 0),  # d1 was deleted
        (day(10), "sage", "sage", 1, 1),
    ]


def test_activity_per_hour_for_one_agent(history: Store, plane: ControlPlane) -> None:
    chosen = Selection(bucket=Bucket.hour, agent="sage")
    assert rows(history, plane, "activity", chosen, columns=("period", "author", "did", "blips")) == [
        (day(9, 8), "sage", SAGE, 1), (day(9, 9), "sage", SAGE, 1), (day(10, 10), "sage", SAGE, 1),
    ]


def test_latency_distribution_per_agent(history: Store, plane: ControlPlane) -> None:
    found = {row["agent"]: row for row in rows(history, plane, "latency")}
    # scout answered a1 after 2.5 s and b1 after 1.5 s (s2b answers itself: no latency)
    assert {key: found["scout"][key] for key in ("replies", "min_ms", "median_ms", "max_ms", "mean_ms")} == {
        "replies": 2, "min_ms": 1500, "median_ms": 2000, "max_ms": 2500, "mean_ms": 2000}
    # sage answered a1 after 4 s and b2 after 10 s (g3's parent was edited since: left out)
    assert {key: found["sage"][key] for key in ("replies", "min_ms", "p10_ms", "p25_ms", "median_ms", "p90_ms")} == {
        "replies": 2, "min_ms": 4000, "p10_ms": 4600, "p25_ms": 5500, "median_ms": 7000, "p90_ms": 9400}
    assert [row["agent"] for row in rows(history, plane, "latency")] == ["scout", "sage"]  # fastest first


def test_latency_without_configured_agents_counts_every_author(history: Store, plane: ControlPlane) -> None:
    table = run_report(history, plane, reports()["latency"], Selection(), [])
    # bob answered scout's s1 after 57.5 s, alice sage's g2 after 10 s
    assert {row["did"]: (row["replies"], row["median_ms"]) for row in table.to_pylist()} == {
        SCOUT: (2, 2000), SAGE: (2, 7000), BOB: (1, 57500), ALICE: (1, 10000)}


def test_who_answers_whom_edges(history: Store, plane: ControlPlane) -> None:
    assert rows(history, plane, "who-answers-whom", columns=("source", "target", "replies")) == [
        ("sage", "alice.test", 2),
        ("alice.test", "sage", 1),
        ("bob.test", "scout", 1),
        ("sage", "bob.test", 1),
        ("scout", "alice.test", 1),
        ("scout", "bob.test", 1),  # scout answering its own s2 is no edge
    ]
    assert rows(history, plane, "who-answers-whom", Selection(agent="scout"), columns=("source", "target")) == [
        ("bob.test", "scout"), ("scout", "alice.test"), ("scout", "bob.test")]
    flags = rows(history, plane, "who-answers-whom", columns=("source_did", "source_is_agent", "target_did", "target_is_agent"))
    assert flags[0] == (SAGE, True, ALICE, False)


def test_threads_rebuilt_from_reply_references(history: Store, plane: ControlPlane) -> None:
    assert rows(history, plane, "threads", columns=("root", "started_by", "blips", "participants", "agents", "depth")) == [
        (blip_uri("a1"), "alice.test", 6, 4, 2, 4),  # a1 → s1 → b1 → s2 → s2b
        (blip_uri("b2"), "bob.test", 3, 3, 1, 2),  # b2 → g2 → a2
        (blip_uri("a3"), "alice.test", 2, 2, 1, 1),
    ]
    first = rows(history, plane, "threads")[0]
    assert first["opening"] == BLIPS["a1"][2]
    assert (first["first_at"], first["last_at"]) == (day(9, 8), datetime(2025, 10, 9, 8, 1, 2))
    assert rows(history, plane, "threads", Selection(top=1, agent="sage"), columns=("root",)) == [(blip_uri("a1"),)]
    assert rows(history, plane, "threads", Selection(agent="scout"), columns=("root",)) == [(blip_uri("a1"),)]


def test_thread_shape_within_a_time_range(history: Store, plane: ControlPlane) -> None:
    """Only the blips in range count; a reply whose parent is out of range starts the chain."""
    chosen = Selection(since=datetime(2025, 10, 9, 8, 0, 30, tzinfo=timezone.utc),
                       until=datetime(2025, 10, 9, 9, 0, 15, tzinfo=timezone.utc))
    assert rows(history, plane, "threads", chosen, columns=("root", "started_by", "blips", "depth")) == [
        (blip_uri("a1"), "alice.test", 3, 2),  # b1 → s2 → s2b
        (blip_uri("b2"), "bob.test", 2, 1),  # b2 → g2
    ]


def test_silence_rate_per_agent(history: Store, plane: ControlPlane) -> None:
    assert rows(history, plane, "silence", columns=("agent", "windows", "answered", "silent", "failed", "open",
                                             "silence_rate")) == [
        ("sage", 2, 1, 0, 0, 1, 0.0),
        ("scout", 3, 1, 1, 1, 0, 0.5),
    ]


def test_error_and_retry_rates_per_agent(history: Store, plane: ControlPlane) -> None:
    assert rows(history, plane, "errors", columns=("agent", "windows_sent", "calls", "failed_calls", "error_rate",
                                            "retried_windows", "retry_rate", "failing", "quarantined",
                                            "top_error")) == [
        ("sage", 1, 2, 1, 0.5, 1, 1.0, 0, 0, None),  # timed out once, answered at the second call
        ("scout", 3, 4, 2, 0.5, 1, 0.3333, 1, 0, "letta 500"),  # one window failed twice
    ]


def test_ledger_reports_within_a_time_range(history: Store, plane: ControlPlane) -> None:
    chosen = Selection(until=datetime(2025, 10, 9, 8, 0, 10, tzinfo=timezone.utc))
    assert rows(history, plane, "silence", chosen, columns=("agent", "windows", "answered")) == [("sage", 1, 1),
                                                                                         ("scout", 1, 1)]
    assert rows(history, plane, "errors", Selection(agent="scout"), columns=("agent", "calls")) == [("scout", 4)]


def test_top_terms_per_day_and_per_hour(history: Store, plane: ControlPlane) -> None:
    per_day = rows(history, plane, "top-terms", columns=("period", "term", "uses", "rank"))
    assert per_day[:7] == [
        (day(9), "memory", 8, 1), (day(9), "agents", 3, 2), (day(9), "blocks", 3, 3), (day(9), "protocol", 3, 4),
        (day(9), "archival", 2, 5), (day(9), "core", 2, 6), (day(9), "persists", 2, 7),
    ]
    assert len([row for row in per_day if row[0] == day(9)]) == 10  # top 10, ties by term
    assert [row[1:3] for row in per_day if row[0] == day(10)] == [
        ("hello", 2), ("again", 1), ("agents", 1), ("alice", 1), ("edited", 1)]  # a3 as edited; d1 deleted
    per_hour = rows(history, plane, "top-terms", Selection(bucket=Bucket.hour, top=2), columns=("period", "term", "uses"))
    assert per_hour == [(day(9, 8), "memory", 6), (day(9, 8), "blocks", 3), (day(9, 9), "protocol", 3),
                        (day(9, 9), "memory", 2), (day(10, 10), "hello", 2), (day(10, 10), "again", 1)]


def test_top_terms_of_one_agent(history: Store, plane: ControlPlane) -> None:
    assert rows(history, plane, "top-terms", Selection(agent="scout"), columns=("term", "uses")) == [
        ("memory", 4), ("archival", 2), ("core", 2), ("blocks", 1), ("persists", 1), ("small", 1)]


def test_top_terms_count_whole_hours(history: Store, plane: ControlPlane) -> None:
    """since/until inside an hour take in that whole hour."""
    chosen = Selection(since=datetime(2025, 10, 9, 9, 30, tzinfo=timezone.utc),
                       until=datetime(2025, 10, 10, 10, 1, tzinfo=timezone.utc), top=1)
    assert rows(history, plane, "top-terms", chosen, columns=("period", "term", "uses")) == [
        (day(9), "protocol", 3), (day(10), "hello", 2)]


def test_top_terms_recount_an_hour_whose_blips_changed(own_history: Store, plane: ControlPlane) -> None:
    before = rows(own_history, plane, "top-terms", Selection(bucket=Bucket.hour, top=1), columns=("period", "term", "uses"))
    assert before[0] == (day(9, 8), "memory", 6)
    own_history.apply(batch(commit_frame(BOB, "b1", at(9, 8, 1, 30), operation="update",
                                         content="Blocks blocks blocks blocks blocks!", cid="cid-b1-edited")))
    own_history.apply(batch(commit_frame(ALICE, "a2", at(9, 9, 30), operation="delete")))
    after = rows(own_history, plane, "top-terms", Selection(bucket=Bucket.hour, top=1), columns=("period", "term", "uses"))
    assert after == [(day(9, 8), "blocks", 7), (day(9, 9), "memory", 2), (day(10, 10), "hello", 2)]
    with own_history.connect() as db:  # the counts kept are derived data: without them, the same answer
        db.execute("DROP TABLE analytics_terms; DROP TABLE analytics_term_hours")
    assert rows(own_history, plane, "top-terms", Selection(bucket=Bucket.hour, top=1),
                columns=("period", "term", "uses")) == after


def test_reports_run_from_sql_text_alone_as_in_the_duckdb_cli(history: Store, tmp_path: Path, plane: ControlPlane) -> None:
    """What `duckdb store.duckdb` with SET VARIABLE and `.read` does: the files need nothing from Python but
    the store's copy of the dispatch windows, as the last report that read them left it."""
    bring_up_to_date(history, plane)
    with duckdb.connect(str(copy_of(history, tmp_path / "cli.duckdb"))) as db:
        db.execute(WINDOWS_VIEW)
        db.execute("SET VARIABLE agents = [{'name': 'scout', 'did': '" + SCOUT + "'}, {'name': 'sage', 'did': '"
                   + SAGE + "'}]")
        db.execute("SET VARIABLE since = '2025-10-09'")
        db.execute((QUERIES_FOLDER / "_prelude.sql").read_text())
        found = {name: db.sql((QUERIES_FOLDER / f"{name}.sql").read_text()).fetchall() for name in reports()}
    assert [row[:3] for row in found["latency"]] == [("scout", SCOUT, 2), ("sage", SAGE, 2)]
    assert [(row[0], row[1], row[4]) for row in found["who-answers-whom"]][0] == ("sage", "alice.test", 2)
    assert [row[1] for row in found["top-terms"]][:2] == ["memory", "agents"]
    for name in reports():
        assert found[name] == [tuple(row.values()) for row in rows(history, plane, name, Selection(
            since=datetime(2025, 10, 9, tzinfo=timezone.utc)))], name


def test_an_empty_store_reports_nothing_and_says_why(tmp_path: Path) -> None:
    store, plane = Store(tmp_path / "empty.duckdb"), ControlPlane(f"sqlite:///{tmp_path / 'control.sqlite'}")
    for name, report in reports().items():
        assert run_report(store, plane, report, Selection(), AGENTS).num_rows == 0, name
    assert nothing_to_report(store, plane, "latency") == (
        f"latency: nothing to report for this selection (0 blips in {store.path}, 0 dispatch windows in {plane.name})")


def test_a_query_duckdb_cannot_run_is_one_line_naming_it(history: Store) -> None:
    with pytest.raises(StoreError) as caught:
        history.analytics_table("broken", "SELECT nope FROM blips", {})
    message = str(caught.value)
    assert message.startswith(f"store {history.path}: broken: Binder Error: ") and "nope" in message
    assert "\n" not in message


# -- selections ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2025-10-09", datetime(2025, 10, 9, tzinfo=timezone.utc)),
    ("2025-10-09T08:30", datetime(2025, 10, 9, 8, 30, tzinfo=timezone.utc)),
    ("2025-10-09T08:30:00Z", datetime(2025, 10, 9, 8, 30, tzinfo=timezone.utc)),
    ("2025-10-09T10:30+02:00", datetime(2025, 10, 9, 8, 30, tzinfo=timezone.utc)),
    ("36h", datetime(2025, 10, 11, 0, 0, tzinfo=timezone.utc)),
    ("7d", datetime(2025, 10, 5, 12, 0, tzinfo=timezone.utc)),
    ("2w", datetime(2025, 9, 28, 12, 0, tzinfo=timezone.utc)),
    ("90m", datetime(2025, 10, 12, 10, 30, tzinfo=timezone.utc)),
])
def test_moments_are_dates_times_or_ages(text: str, expected: datetime) -> None:
    assert parse_moment(text, "--since", NOW) == expected


@pytest.mark.parametrize("options, message", [
    ({"since": "yesterdayy"}, "bad --since: 'yesterdayy' is not a date, a time or an age "
                              "(e.g. 2025-10-09, 2025-10-09T08:00Z, 36h, 7d)"),
    ({"until": "2025-13-01"}, "bad --until: '2025-13-01' is not a date, a time or an age "
                              "(e.g. 2025-10-09, 2025-10-09T08:00Z, 36h, 7d)"),
    ({"since": "1d", "until": "2d"}, "bad --since/--until: 2025-10-11 12:00 UTC is not before 2025-10-10 12:00 UTC"),
    ({"agent": "nobody"}, "bad --agent: no agent named 'nobody' in the config (agents: scout, sage)"),
])
def test_a_bad_selection_is_one_line_naming_the_option(options: dict, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        selection(AGENTS, now=NOW, **options)
    assert str(caught.value) == message


def test_a_day_selection_covers_one_utc_day() -> None:
    chosen = day_selection(datetime(2025, 10, 9).date())
    assert (chosen.since, chosen.until, chosen.bucket) == (
        datetime(2025, 10, 9, tzinfo=timezone.utc), datetime(2025, 10, 10, tzinfo=timezone.utc), Bucket.hour)
    assert chosen.describe() == "2025-10-09 00:00 UTC to 2025-10-10 00:00 UTC, per hour"


# -- the Parquet export ----------------------------------------------------------------------------


def parquet_rows(folder: Path) -> dict[str, list]:
    with duckdb.connect() as db:
        found = db.sql(f"""SELECT day::VARCHAR, uri, content, deleted FROM read_parquet(
                            '{folder}/blips/*/*.parquet', hive_partitioning = true) ORDER BY time_us""").fetchall()
    per_day: dict[str, list] = {}
    for day_text, uri, content, deleted in found:
        per_day.setdefault(day_text, []).append((uri, content, deleted))
    return per_day


def test_export_writes_each_day_as_parquet(history: Store, tmp_path: Path) -> None:
    summary = export_parquet(history, tmp_path / "export")
    assert [written.isoformat() for written in summary.days] == ["2025-10-09", "2025-10-10"]
    assert summary.blips == 12
    per_day = parquet_rows(tmp_path / "export")
    assert [uri for uri, _, _ in per_day["2025-10-09"]] == [blip_uri(rkey) for rkey in
                                                           ("a1", "s1", "g1", "b1", "s2", "s2b", "b2", "g2", "a2")]
    assert per_day["2025-10-10"] == [(blip_uri("g3"), "Hello Alice.", False),
                                     (blip_uri("a3"), "Hello again, agents. Edited.", False),
                                     (blip_uri("d1"), None, True)]  # the tombstone is exported too
    identities = pq.read_table(tmp_path / "export" / "identities.parquet").to_pylist()
    assert {row["did"]: row["handle"] for row in identities} == {
        ALICE: "alice.test", BOB: "bob.test", SCOUT: "scout.agents.test"}


def test_a_refresh_rewrites_only_the_days_that_changed(own_history: Store, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    export_parquet(own_history, folder)
    untouched = folder / "blips" / "day=2025-10-10" / "blips.parquet"
    written = untouched.stat().st_mtime_ns
    assert export_parquet(own_history, folder).days == []  # nothing changed
    own_history.apply(batch(commit_frame(BOB, "b1", at(9, 12, 0), operation="update", content="Blocks, edited",
                                         cid="cid-b1-edited")))
    own_history.apply(batch(commit_frame(BOB, "new", at(12, 9, 0), content="A new day")))
    summary = export_parquet(own_history, folder)
    today = datetime.now(timezone.utc).date()  # the new blip was received now
    assert summary.days == sorted({datetime(2025, 10, 9).date(), today})
    assert untouched.stat().st_mtime_ns == written
    per_day = parquet_rows(folder)
    assert (blip_uri("b1"), "Blocks, edited", False) in per_day["2025-10-09"]  # where it was first received
    assert len(per_day["2025-10-09"]) == 9 and per_day[today.isoformat()][-1][1] == "A new day"
    assert not list(folder.rglob(".*.parquet.*"))  # nothing left half-written


def test_an_export_of_another_store_replaces_what_the_folder_held(history: Store, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    export_parquet(history, folder)
    other = Store(tmp_path / "other.duckdb")
    other.apply(batch(commit_frame(ALICE, "only", at(9, 8, 0), content="only me")))
    summary = export_parquet(other, folder)
    assert summary.blips == 1
    assert sum(len(found) for found in parquet_rows(folder).values()) == 1
    assert (folder / MARKER).exists()
