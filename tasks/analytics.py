"""Analytics tasks: one task run per report, and one each for the artifacts, the HTML page and the export."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from blipflow.analytics.export import ExportSummary, export_parquet
from blipflow.analytics.output import json_rows, markdown_table
from blipflow.analytics.reports import Query, Selection, run_report
from blipflow.config import AgentConfig
from blipflow.control.engine import ControlPlane
from blipflow.store.history import Store, StoreBusy

ARTIFACT_ROWS = 50  # per report in the daily Markdown; the table artifacts keep up to ARTIFACT_TABLE_ROWS
ARTIFACT_TABLE_ROWS = 500


def store_was_busy(task: Any, task_run: Any, state: Any) -> bool:
    """Another process holding the store past the lock timeout may let go; any other failure stays."""
    try:
        state.result()
    except StoreBusy:
        return True
    except Exception:  # noqa: BLE001 - a missing store or a broken query fails the same way again
        return False
    return False


@task(name="analytics-report", task_run_name="report {report.name}", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=store_was_busy, cache_policy=NO_CACHE)  # a Store and Arrow tables: nothing to hash
def report_rows(store: Store, report: Query, chosen: Selection, agents: list[AgentConfig],
                plane: ControlPlane) -> pa.Table:
    return run_report(store, report, chosen, agents, plane)


@task(name="analytics-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(results: dict[str, tuple[Query, pa.Table]], day: date) -> None:
    """The day's report as one Markdown artifact, and each report's rows as a table artifact."""
    sections = [f"# blipflow analytics for {day.isoformat()} (UTC)"]
    for name, (report, table) in results.items():
        sections.append(f"## {name}\n\n{report.summary}\n\n"
                        + (markdown_table(table, ARTIFACT_ROWS) if table.num_rows else "_Nothing to report._"))
        create_table_artifact(json_rows(table.slice(0, ARTIFACT_TABLE_ROWS)), key=f"analytics-{name}",
                              description=f"{name} for {day.isoformat()}: {report.summary}")
    create_markdown_artifact("\n\n".join(sections), key="analytics-daily",
                             description=f"blipflow analytics for {day.isoformat()}")


@task(name="analytics-html", cache_policy=NO_CACHE)
def write_html(results: dict[str, tuple[Query, pa.Table]], chosen: Selection, path: Path,
               handles: dict[str, str]) -> Path:
    from blipflow.analytics.charts import (
        html_report,  # matplotlib only in the task that draws
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    html_report(results, chosen, path, handles)
    return path


@task(name="parquet-export", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=store_was_busy,
      cache_policy=NO_CACHE)
def refresh_export(store: Store, folder: Path) -> ExportSummary:
    return export_parquet(store, folder)
