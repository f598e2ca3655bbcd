"""What the control plane takes over from a store of the previous layout: its ledger's tables and the
blips in the order they arrived (see `blipflow.operations.takeover`)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from blipflow.store.history import Store
from blipflow.store.schema import LEDGER_TABLES
from blipflow.store.statements import RECORD_AS_SENT


def ledger_table(store: Store, table: str) -> pa.Table:
    """Every row of one of the ledger's tables as this file kept them before the control plane did
    (windows, deliveries, agent_progress, circuits, replies, posts), its columns by name."""
    if table not in LEDGER_TABLES:
        raise ValueError(f"{table} is not one of the ledger's tables {LEDGER_TABLES}")
    with store.connect() as db:
        return db.sql(f"SELECT * FROM {table}").to_arrow_table()


def blip_operations(store: Store, batch: int) -> Iterator[pa.RecordBatch]:
    """Each blip's last stored operation, in the order blips first arrived here (seq), in batches of
    at most `batch`: uri, did, time_us, cid, deleted, record (JSON text, NULL when deleted), stored_at."""
    with store.connect() as db:
        reader = db.execute(
            f"""SELECT uri, did, time_us, cid, deleted, ({RECORD_AS_SENT})::VARCHAR AS record,
                       ingested_at AS stored_at
                FROM blips b WHERE b.collection = 'stream.thought.blip' ORDER BY seq""").to_arrow_reader(batch)
        yield from reader


def last_blip_through(store: Store, seq: int) -> str | None:
    """The uri of the blip that arrived last among those with seq <= `seq` (None: no such blip)."""
    rows = store.query_all("SELECT uri FROM blips WHERE seq <= ? ORDER BY seq DESC LIMIT 1", [seq])
    return rows[0][0] if rows else None
