"""What `blipflow status` reads of the history store: ingest's figures, as typed rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from blipflow.store.history import Store


@dataclass(frozen=True)
class StoredBlips:
    count: int  # not deleted
    last_5_min: int  # stored in the last five minutes
    last_hour: int
    last_stored_at: datetime | None


@dataclass(frozen=True)
class CursorFigures:
    """A source's position, and how far behind the stream its newest event was when it arrived."""

    source: str
    cursor: int
    updated_at: datetime | None
    newest_received_at: datetime | None
    lag_seconds: float | None
    seconds_since_newest: float | None


@dataclass(frozen=True)
class IngestFigures:
    blips: StoredBlips
    cursors: list[CursorFigures]  # newest arrival first
    counters: dict[str, int]


def ingest_figures(store: Store) -> IngestFigures:
    """The figures behind `blipflow status`, read in one open of the file."""
    with store.session():
        [blips] = store.query_all(
            """SELECT count(*) FILTER (NOT deleted),
                      count(*) FILTER (ingested_at >= now() - INTERVAL 5 MINUTE),
                      count(*) FILTER (ingested_at >= now() - INTERVAL 1 HOUR),
                      max(ingested_at)
               FROM blips""")
        cursors = store.query_all(
            """SELECT source, cursor, updated_at, newest_received_at,
                      greatest(0, epoch_us(newest_received_at) - newest_time_us) / 1e6,
                      greatest(0, epoch_us(now()) - epoch_us(newest_received_at)) / 1e6
               FROM cursors ORDER BY newest_received_at DESC NULLS LAST, source""")
        counters = store.query_all("SELECT name, value FROM counters ORDER BY name")
    return IngestFigures(StoredBlips(*blips), [CursorFigures(*row) for row in cursors], dict(counters))
