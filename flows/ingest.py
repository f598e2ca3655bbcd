"""The long-running ingest flow: every blip from Jetstream (or a firehose) into DuckDB.

Started by a deployment with no schedule. Cancelling the run sends its process SIGTERM: ingest stops
reading, stores everything received, and Prefect records the run as Cancelled.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger

from blipflow.config import load_settings
from blipflow.ingest import run_ingest


@flow(name="ingest", retries=3, retry_delay_seconds=30)
async def ingest(source: Literal["jetstream", "firehose"] = "jetstream", config_file: str | None = None) -> dict:
    """Runs until cancelled; a source that stays unreachable fails the run, and Prefect retries it."""
    settings = load_settings(config_file)
    stats = await run_ingest(settings, source)
    summary = {"received": stats.received, "stored": stats.stored, "bad": stats.bad, "connects": stats.connects}
    get_run_logger().info("ingest stopped: %s", summary)
    return summary
