"""The long-running ingest flow: every blip from Jetstream (or a firehose) into DuckDB.

Started by a deployment with no schedule. Cancelling the run sends its process SIGTERM: ingest stops
reading, stores everything received, and Prefect records the run as Cancelled.

The flow itself is synchronous and runs the ingest loop with `asyncio.run`: Prefect's SIGTERM handler
raises where the main thread is, which in an asyncio program is the event loop's wait for I/O. Our own
`asyncio.run` turns that into a cancellation of the loop's tasks (the ingest's `finally` stores what was
received) and hands the exception on to Prefect's engine, which records the cancel. An async flow
would leave it to the engine's own `asyncio.run`, whose task then ends with the exception: a traceback
("unhandled exception during asyncio.run() shutdown") in the worker's output, and "Finished in state
Running()".
"""

from __future__ import annotations

import asyncio
from typing import Literal

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from blipflow.ingest.ingester import run_ingest
from blipflow.ingest.source import SourceUnavailable
from blipflow.model.failures import BadRequest
from blocks.loading import settings_from
from flows.observe import IngestObserver


@flow(name="ingest")
def ingest(source: Literal["jetstream", "firehose"] = "jetstream", config_file: str | None = None,
           since: str | None = None) -> State:
    """Runs until cancelled. A source that stays unreachable (only when `max_reconnect_attempts` is set)
    fails the run with one line naming the endpoints, not a traceback. `since` backfills: a cursor
    (Jetstream's time_us, a firehose's seq), or for Jetstream a date, a time or an age (`2h`); without it a
    first run starts at the live end and a later one where the last stopped."""
    settings = settings_from(config_file)
    try:
        stats = asyncio.run(run_ingest(settings, source, notify=IngestObserver(), since=since))
    except (SourceUnavailable, BadRequest) as error:
        get_run_logger().error("%s", error)
        return Failed(message=str(error))
    return Completed(message=f"{stats.received} events received, {stats.stored} stored, {stats.bad} bad")
