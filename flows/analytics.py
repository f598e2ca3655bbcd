"""The analytics flow: a day's report as Prefect artifacts and one HTML page, and the Parquet export
refreshed. The `analytics` deployment runs it every night for the day before.

Every report is a task run of its own, one short open of the store each, so ingest gets the file in
between (see store.py on sharing it).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from blipflow.analytics.reports import (
    day_selection,
    handles_of_uris,
    known_agents,
    reports,
)
from blipflow.config import ConfigError
from blipflow.control.engine import ControlPlane
from blipflow.model.failures import BadRequest
from blipflow.network.accounts import AccountFailed
from blipflow.store.history import Store, StoreError
from blocks.loading import settings_from
from tasks.analytics import publish_artifacts, refresh_export, report_rows, write_html


@flow(name="analytics")
def analytics(config_file: str | None = None, day: str | None = None, export_dir: str = "data/parquet",
              html_dir: str | None = "data/reports") -> State:
    """Report on `day` (YYYY-MM-DD, UTC; default yesterday) and bring the export in `export_dir` up to date.
    The page goes to `html_dir`/analytics-<day>.html (none without `html_dir`)."""
    logger = get_run_logger()
    try:
        covered = report_day(day)
        settings = settings_from(config_file)
        store, plane = Store.existing(settings.store), ControlPlane.from_settings(settings)
        agents = known_agents(settings)
    except (BadRequest, ConfigError, StoreError, AccountFailed) as error:
        logger.error("%s", error)
        return Failed(message=str(error))
    chosen = day_selection(covered)
    results = {name: (report, report_rows(store, plane, report, chosen, agents)) for name, report in reports().items()}
    publish_artifacts(results, covered)
    if html_dir:
        handles = handles_of_uris(store, [table for _, table in results.values()])
        page = write_html(results, chosen, Path(html_dir) / f"analytics-{covered.isoformat()}.html", handles)
        logger.info("wrote %s", page)
    exported = refresh_export(store, Path(export_dir))
    return Completed(message=f"{covered.isoformat()}: {len(results)} reports; "
                             f"export: {len(exported.days)} days rewritten, {exported.blips} blips")


def report_day(day: str | None) -> date:
    if day is None:
        return datetime.now(timezone.utc).date() - timedelta(days=1)
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise BadRequest(f"bad day: {day!r} is not a date like 2025-10-09") from None
