"""The history as Parquet, partitioned by day: `<folder>/blips/day=YYYY-MM-DD/blips.parquet` (Hive style,
so `read_parquet('<folder>/blips/*/*.parquet', hive_partitioning = true)` reads it back with its `day`)
and `<folder>/identities.parquet`.

A blip's day is the UTC day the store first received it: no later operation moves a blip to another
day, so a refresh rewrites only the days with blips stored or changed since the last export (the
folder's `_export.json` remembers up to when), each day read in its own short connection so ingest
gets its turns in between. Every file is written aside and renamed into place: a reader sees a day's
old file or its new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from blipflow.analytics.reports import QUERIES_FOLDER, read_query
from blipflow.store.history import Store

MARKER = "_export.json"


@dataclass(frozen=True)
class ExportSummary:
    folder: Path
    days: list[date]  # the days written this time
    blips: int  # blips in those days


def export_parquet(store: Store, folder: Path) -> ExportSummary:
    """Write the days changed since the last export into `folder` (all of them the first time)."""
    marker = folder / MARKER
    since = last_export(marker, store)
    changed = run_export_query(store, "changed-days", {"since": since} if since else {})
    days: list[date] = changed.column("day").to_pylist()
    if since is None:  # a first export, or of another store: nothing already there stays
        shutil.rmtree(folder / "blips", ignore_errors=True)
    written = 0
    for day in days:
        table = run_export_query(store, "blips-of-day", {"day": day})
        write_atomically(table, folder / "blips" / f"day={day.isoformat()}" / "blips.parquet")
        written += table.num_rows
    write_atomically(run_export_query(store, "identities", {}), folder / "identities.parquet")
    if days:
        changed_until: datetime = changed.column("changed_until")[0].as_py()
        marker.write_text(json.dumps({"store": str(store.path.resolve()), "changed_until": changed_until.isoformat()}))
    return ExportSummary(folder, days, written)


def run_export_query(store: Store, name: str, variables: dict[str, object]) -> pa.Table:
    """One of the export's queries, blipflow/analytics/sql/export/<name>.sql."""
    return store.analytics_table(f"export/{name}", read_query(QUERIES_FOLDER / "export" / f"{name}.sql").sql, variables)


def last_export(marker: Path, store: Store) -> datetime | None:
    """Up to when the folder holds this store's changes; None: export everything."""
    try:
        seen = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if seen.get("store") != str(store.path.resolve()):
        return None
    return datetime.fromisoformat(seen["changed_until"])


def write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    pq.write_table(table, aside, compression="zstd")
    os.replace(aside, path)
