"""Batch analytics over the store: named reports, one SQL file each under `blipflow/analytics/sql/`.

A report is read from its file (the first line documents it) and runs after `_prelude.sql`, which turns
the variables of a selection into the temporary macros every report reads, so the same files run in the
DuckDB CLI. Each report is one short connection (see store.py on sharing the file with ingest).

The blips are DuckDB's; the dispatch ledger is the control plane's: a report that reads `windows` reads
the store's copy of them (`window_copy`), brought up to date first, as a temporary view of that name,
which stands in for the table the DuckDB file kept before the control plane did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import Enum
from pathlib import Path

import pyarrow as pa

from blipflow.analytics import window_copy
from blipflow.config import AgentConfig, Settings
from blipflow.control import scans
from blipflow.control.engine import ControlPlane
from blipflow.model.failures import BadRequest
from blipflow.model.moments import moment_text, parse_moment
from blipflow.network.accounts import with_learned_dids
from blipflow.store.history import Store

QUERIES_FOLDER = Path(__file__).with_name("sql")  # shipped as package data
PRELUDE = "_prelude"

class Bucket(str, Enum):
    hour = "hour"
    day = "day"
    week = "week"


@dataclass(frozen=True)
class Query:
    name: str
    summary: str  # the file's first line, without its `-- name:` lead
    sql: str


def read_query(path: Path) -> Query:
    sql = path.read_text(encoding="utf-8")
    first = sql.splitlines()[0].removeprefix("--").strip()
    return Query(path.stem, first.removeprefix(f"{path.stem}:").strip(), sql)


def reports() -> dict[str, Query]:
    """Every report, by name; files starting with `_` are not reports."""
    return {path.stem: read_query(path) for path in sorted(QUERIES_FOLDER.glob("*.sql")) if not path.stem.startswith("_")}


@dataclass(frozen=True)
class Selection:
    """What a report looks at: [since, until), one agent or all, the period of time series, a ranking's length."""

    since: datetime | None = None
    until: datetime | None = None
    agent: str | None = None
    bucket: Bucket = Bucket.day
    top: int | None = None

    def variables(self, agents: Sequence[AgentConfig]) -> dict[str, object]:
        """The DuckDB variables the SQL files read; unset ones take the defaults the files document."""
        known = [{"name": agent.name, "did": agent.did} for agent in agents if agent.did]
        values: dict[str, object | None] = {
            "since": self.since, "until": self.until, "agent": self.agent, "bucket": self.bucket.value,
            "top": self.top, "agents": known or None,
        }
        return {name: value for name, value in values.items() if value is not None}

    def describe(self) -> str:
        start = moment_text(self.since) if self.since else "the beginning"
        end = moment_text(self.until) if self.until else "now"
        return f"{start} to {end}" + (f", agent {self.agent}" if self.agent else "") + f", per {self.bucket.value}"


def selection(
    agents: Sequence[AgentConfig],
    *,
    since: str | None = None,
    until: str | None = None,
    agent: str | None = None,
    bucket: Bucket = Bucket.day,
    top: int | None = None,
    now: datetime | None = None,
) -> Selection:
    """A selection from command-line text, or BadRequest naming the option at fault."""
    now = now or datetime.now(timezone.utc)
    start = parse_moment(since, "--since", now) if since else None
    end = parse_moment(until, "--until", now) if until else None
    if start and end and start >= end:
        raise BadRequest(f"bad --since/--until: {moment_text(start)} is not before {moment_text(end)}")
    names = [configured.name for configured in agents]
    if agent is not None and agent not in names:
        raise BadRequest(f"bad --agent: no agent named {agent!r} in the config (agents: {', '.join(names) or 'none'})")
    return Selection(start, end, agent, bucket, top)


def day_selection(day: date) -> Selection:
    """One UTC day per hour, as the daily report covers it."""
    start = datetime.combine(day, time(), timezone.utc)
    return Selection(start, start + timedelta(days=1), bucket=Bucket.hour)


def known_agents(settings: Settings) -> list[AgentConfig]:
    """The configured agents, each with its DID — learned from its handle when not given, as dispatch does —
    so that reports tell them from people; AccountFailed says, in one line, why one could not be learned."""
    return with_learned_dids(settings.agents, settings.bluesky, timeout=settings.publish.timeout)


def run_report(store: Store, plane: ControlPlane, report: Query, chosen: Selection,
               agents: Sequence[AgentConfig]) -> pa.Table:
    prelude = read_query(QUERIES_FOLDER / f"{PRELUDE}.sql")
    script = prelude.sql + "\n" + report.sql
    if reads_the_ledger(report):
        window_copy.bring_up_to_date(store, plane)
        script = window_copy.WINDOWS_VIEW + script
    return store.analytics_table(report.name, script, chosen.variables(agents))


def reads_the_ledger(report: Query) -> bool:
    """Whether the report reads the dispatch windows (outside its comments); the others never wait for them."""
    code = "\n".join(line.split("--")[0] for line in report.sql.splitlines())
    return re.search(r"\b(FROM|JOIN)\s+windows(_in_range\(\))?(\s|$|;|\))", code, re.IGNORECASE) is not None


def handles_of_uris(store: Store, tables: Iterable[pa.Table]) -> dict[str, str]:
    """The known handle of each author whose at-uris the tables hold (DID → handle), to show those uris short."""
    dids = {value.removeprefix("at://").partition("/")[0]
            for table in tables for column in table.columns if pa.types.is_string(column.type)
            for value in column.to_pylist() if isinstance(value, str) and value.startswith("at://")}
    return {did: identity.handle for did, identity in store.identities(sorted(dids)).items() if identity.handle}


def nothing_to_report(store: Store, plane: ControlPlane, report: str) -> str:
    """Why a report came back empty, in one line."""
    held = f"{store.blip_count()} blips in {store.path}, {scans.window_count(plane)} dispatch windows in {plane.name}"
    return f"{report}: nothing to report for this selection ({held})"
