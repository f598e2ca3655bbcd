"""The two stores of one install as tests fill them: a batch goes into the history store and on into the
control plane through the real feed, as ingest does it; and the control plane's rows read by plain SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import text

from blipflow.control.engine import ControlPlane
from blipflow.ingest.feed import Feed
from blipflow.store.history import IngestBatch, Store


@dataclass
class FedStores:
    store: Store
    plane: ControlPlane

    @classmethod
    def beside(cls, store_path: Path) -> FedStores:
        """The store at `store_path` and the control plane where it is by default, in the same folder."""
        return cls(Store(store_path), ControlPlane(f"sqlite:///{store_path.with_name('control.sqlite')}"))

    def apply(self, batch: IngestBatch) -> None:
        began_at = datetime.now(timezone.utc)
        self.store.apply(batch)
        Feed(self.plane, self.store).stored(batch.blips.values(), began_at)

    def rows(self, sql: str, **params: Any) -> list[tuple]:
        return control_rows(self.plane, sql, **params)


def control_rows(plane: ControlPlane, sql: str, **params: Any) -> list[tuple]:
    """The rows of a query on the control plane (`:name` parameters), as tuples."""
    with plane.reading() as session:
        return [tuple(row) for row in session.execute(text(sql), params)]
