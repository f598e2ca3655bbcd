"""Taking over a store of the previous layout: before the control plane, the delivery ledger (windows,
deliveries, each agent's progress), the circuits and the outbox (replies and their posts) lived inside the
DuckDB file. The first process that opens the control plane on such a store copies them over, with the
blips they refer to, so that no window and no queued reply is lost; `blipflow take-over` does the same
by hand.

Once, and recorded: the copy is one transaction of the control plane that ends by noting the store in
`takeovers`, and a store noted there is never opened for it again (so processes that start later do not
touch the DuckDB file for it). Processes starting together take turns (SQLite's write lock, PostgreSQL's
advisory lock), and every row is inserted only where its key is free: a copy that is cut off leaves
nothing, and one that runs again over rows already there changes none of them.

Blips are copied in the order they first arrived in the old store, so the control plane numbers them in
that order too, and each agent's progress (a position in that order) becomes the control plane's number
of the same blip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson
import pyarrow as pa
from sqlalchemy import select, text
from sqlmodel import Session

from blipflow.config import StoreConfig
from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import facts_of
from blipflow.store.history import Store
from blipflow.store.previous_layout import (
    blip_operations,
    last_blip_through,
    ledger_table,
)

TAKEOVER_LOCK = 0x6274616B  # the advisory lock takeovers take turns by ("btak")
BLIPS_PER_BATCH = 10_000
# Parents before children: each table's rows refer only to rows of the tables before it.
COPIED = (("windows", tables.Window, ["id"]), ("deliveries", tables.Delivery, ["agent", "blip_uri"]),
          ("circuits", tables.Circuit, ["agent"]), ("replies", tables.Reply, ["id"]),
          ("posts", tables.Post, ["reply_id", "part"]))
COUNTED = ("failures", "strikes", "attempts")  # columns added to the old store later: NULL there reads as 0


@dataclass(frozen=True)
class TakenOver:
    """What one takeover copied (all zero when the store had been taken over before or did not exist)."""

    store: str
    blips: int = 0
    windows: int = 0
    replies: int = 0
    already: bool = False


def take_over(plane: ControlPlane, config: StoreConfig) -> TakenOver:
    """Copy the ledger, outbox and blips of the old store at `config.path` into the control plane, unless
    that was done before or there is no such file."""
    name = str(config.path.resolve())
    if taken_over(plane, name):
        return TakenOver(name, already=True)
    if not config.path.exists():
        return TakenOver(name)
    store = Store.from_config(config)
    with store.session(), plane.writing() as session:  # one snapshot of the old store, one transaction here
        if plane.backend == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TAKEOVER_LOCK})
        if session.get(tables.Takeover, name) is not None:  # another process did it while this one waited
            return TakenOver(name, already=True)
        blips = copy_blips(plane, session, store)
        copied = {table: insert_new(plane, session, model, keys, rows_of(ledger_table(store, table)))
                  for table, model, keys in COPIED}
        copy_progress(plane, session, store)
        session.add(tables.Takeover(store=name, blips=blips, windows=copied["windows"], replies=copied["replies"]))
    return TakenOver(name, blips, copied["windows"], copied["replies"])


def taken_over(plane: ControlPlane, name: str) -> bool:
    with plane.reading() as session:
        return session.get(tables.Takeover, name) is not None


def copy_blips(plane: ControlPlane, session: Session, store: Store) -> int:
    copied = 0
    for batch in blip_operations(store, BLIPS_PER_BATCH):
        rows = []
        for blip in batch.to_pylist():
            record = orjson.loads(blip["record"]) if blip["record"] is not None else None
            facts = facts_of(blip["uri"], blip["did"], blip["time_us"], blip["cid"], record)
            rows.append({**asdict(facts), "mentions": list(facts.mentions), "tags": list(facts.tags),
                         "refs": list(facts.refs), "stored_at": blip["stored_at"], "updated_at": tables.now()})
        copied += insert_new(plane, session, tables.Blip, ["uri"], rows)
    return copied


def copy_progress(plane: ControlPlane, session: Session, store: Store) -> None:
    """Each agent's progress, as the control plane's number of the last blip it reached in the old store's
    order (never past it: a blip the control plane had before is at most decided again, never skipped)."""
    for progress in rows_of(ledger_table(store, "agent_progress")):
        uri = last_blip_through(store, progress["decided_through"])
        seq = 0 if uri is None else session.execute(select(tables.Blip.seq).where(tables.Blip.uri == uri)).scalar_one()
        insert_new(plane, session, tables.AgentProgress, ["agent"], [{"agent": progress["agent"], "decided_through": seq}])


def insert_new(plane: ControlPlane, session: Session, model: Any, keys: list[str], rows: list[dict]) -> int:
    """Insert the rows whose key is free; returns how many there were to copy."""
    if rows:
        session.execute(plane.upsert(model.__table__).on_conflict_do_nothing(index_elements=keys), rows)
    return len(rows)


def rows_of(table: pa.Table) -> list[dict]:
    return [{column: (0 if value is None and column in COUNTED else value) for column, value in row.items()}
            for row in table.to_pylist()]
