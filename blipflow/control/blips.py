"""The blips dispatch hands agents: fed by ingest from what it stored, read by dispatch to decide and send.

Arrival order is the `seq` the database numbers blips by, and coordination's position is a `seq` below
which everything is decided. That holds only if a blip never commits after one with a higher
`seq`: SQLite has one writer at a time anyway, and on PostgreSQL feeding takes an advisory lock for its
transaction, so the numbers are handed out in commit order there too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, select, text
from sqlalchemy.engine import Dialect
from sqlmodel import Session

from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import BlipFacts
from blipflow.control.tables import now
from blipflow.model.blip import Blip

FEED_LOCK = 0x62666565  # the advisory lock feeding takes turns by ("bfee")

# The columns feeding writes: a blip's facts, and when it was stored and written.
UPSERTED = (*(facts_field.name for facts_field in fields(BlipFacts)), "stored_at", "updated_at")
LIST_COLUMNS = ("mentions", "tags", "refs")  # JSON lists, most of them empty


@dataclass(frozen=True)
class CompiledUpsert:
    """Feeding's upsert, compiled once for one database, with the values it takes already converted as
    SQLAlchemy would (its per-row conversion of every parameter was most of a feed's time, measured): the
    same value of a batch and an empty list are converted once, not once a row."""

    sql: str
    positions: tuple[str, ...] | None  # the parameters' order, for a database that numbers them
    converters: dict[str, Callable[[Any], Any] | None]

    def rows(self, facts: Iterable[BlipFacts], stored: datetime, updated: datetime) -> list[tuple] | list[dict]:
        times = {"stored_at": self.converted("stored_at", stored), "updated_at": self.converted("updated_at", updated)}
        no_items = {column: self.converted(column, []) for column in LIST_COLUMNS}
        per_row = {column: convert for column, convert in self.converters.items()
                   if convert is not None and column not in times}
        rows = []
        for fact in facts:
            values = {**vars(fact), **times}
            for column, convert in per_row.items():
                value = values[column]
                if column in no_items:
                    values[column] = convert(list(value)) if value else no_items[column]
                elif value is not None:
                    values[column] = convert(value)
            rows.append(values)
        if self.positions is None:
            return rows
        return [tuple(values[name] for name in self.positions) for values in rows]

    def converted(self, column: str, value: Any) -> Any:
        convert = self.converters[column]
        return value if convert is None or value is None else convert(value)


class Blips:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._upserts: dict[str, CompiledUpsert] = {}  # by dialect name

    def add(self, facts: Iterable[BlipFacts], *, stored_at: datetime | None = None) -> None:
        """Store blip operations; a later one (by the source's clock) wins, and replaying one changes nothing.
        A deletion keeps the blip's place and date but leaves it nothing to hand anyone."""
        with self.plane.writing() as session:
            self.add_within(session, facts, stored_at=stored_at)

    def add_within(self, session: Session, facts: Iterable[BlipFacts], *, stored_at: datetime | None = None) -> None:
        """`add`, as part of the caller's transaction (which must be one that writes)."""
        stored, updated = stored_at or now(), now()
        connection = session.connection()
        upsert = self._upserts.get(connection.dialect.name) or self._compile_upsert(connection.dialect)
        rows = upsert.rows(facts, stored, updated)
        if not rows:
            return
        if self.plane.backend == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK})
        connection.exec_driver_sql(upsert.sql, rows)

    def _compile_upsert(self, dialect: Dialect) -> CompiledUpsert:
        blip = tables.Blip.__table__
        insert = self.plane.upsert(blip).values({column: bindparam(column) for column in UPSERTED})
        statement = insert.on_conflict_do_update(
            index_elements=["uri"],
            set_={**{column: insert.excluded[column] for column in UPSERTED
                     if column not in ("uri", "did", "stored_at", "created_at")},
                  "created_at": case((insert.excluded.deleted, blip.c.created_at), else_=insert.excluded.created_at)},
            where=insert.excluded.time_us > blip.c.time_us,
        )
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup) if compiled.positional else None
        upsert = CompiledUpsert(compiled.string, names, {
            column: blip.c[column].type._cached_bind_processor(dialect) for column in UPSERTED})
        self._upserts[dialect.name] = upsert
        return upsert

    def window_blips(self, window_id: str) -> list[Blip]:
        """The blips of a window, oldest first; their authors' handles and names are the identity
        cache's to fill in (`blip.with_identity`)."""
        with self.plane.reading() as session:
            return blips_of_window(session, window_id)

    def facts(self, uri: str) -> tables.Blip | None:
        """Everything the control plane knows of one blip (its mentions, tags, thread, refs)."""
        with self.plane.reading() as session:
            return session.scalars(select(tables.Blip).where(tables.Blip.uri == uri)).first()


def blips_of_window(session: Session, window_id: str) -> list[Blip]:
    """`Blips.window_blips` within a transaction of the caller's (the ledger reads a window to send in one)."""
    return [blip_of(row) for row in session.execute(WINDOW_BLIPS, {"window_id": window_id})]


def blip_of(row: Any) -> Blip:
    """A blip as a message is made of it, from a row of MESSAGE_COLUMNS."""
    return Blip(row.uri, row.did, None, None, row.time_us, row.created_at, row.content or "", row.parent_uri)


# Read for every window sent: built once, on the Core tables, only what a message needs (see `tables.WINDOWS`).
_blip, _delivery = tables.BLIPS.c, tables.DELIVERIES.c
MESSAGE_COLUMNS = (_blip.uri, _blip.did, _blip.time_us, _blip.created_at, _blip.content, _blip.parent_uri)
WINDOW_BLIPS = (select(*MESSAGE_COLUMNS).join_from(tables.BLIPS, tables.DELIVERIES, _delivery.blip_uri == _blip.uri)
                .where(_delivery.window_id == bindparam("window_id")).order_by(_blip.time_us))
