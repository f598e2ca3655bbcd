"""The blips dispatch hands agents: fed by ingest from what it stored, read by dispatch to decide and send.

Arrival order is the `seq` the database numbers blips by, and coordination's position is a `seq` below
which everything is decided. That holds only if a blip never commits after one with a higher
`seq`: SQLite has one writer at a time anyway, and on PostgreSQL feeding takes an advisory lock for its
transaction, so the numbers are handed out in commit order there too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import case, select, text
from sqlmodel import Session

from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import BlipFacts
from blipflow.control.tables import now
from blipflow.model.blip import Blip

FEED_LOCK = 0x62666565  # the advisory lock feeding takes turns by ("bfee")
class Blips:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def add(self, facts: Iterable[BlipFacts], *, stored_at: datetime | None = None) -> None:
        """Store blip operations; a later one (by the source's clock) wins, and replaying one changes nothing.
        A deletion keeps the blip's place and date but leaves it nothing to hand anyone."""
        with self.plane.writing() as session:
            self.add_within(session, facts, stored_at=stored_at)

    def add_within(self, session: Session, facts: Iterable[BlipFacts], *, stored_at: datetime | None = None) -> None:
        """`add`, as part of the caller's transaction (which must be one that writes)."""
        stored, updated = stored_at or now(), now()
        # vars(), not asdict(): asdict deep-copies every value, most of a feed's time (measured)
        rows = [{**vars(fact), "mentions": list(fact.mentions), "tags": list(fact.tags), "refs": list(fact.refs),
                 "stored_at": stored, "updated_at": updated} for fact in facts]
        if not rows:
            return
        blip = tables.Blip.__table__
        insert = self.plane.upsert(blip)
        changed = {column: insert.excluded[column] for column in rows[0]
                   if column not in ("uri", "did", "stored_at", "created_at")}
        statement = insert.on_conflict_do_update(
            index_elements=["uri"],
            set_={**changed,
                  "created_at": case((insert.excluded.deleted, blip.c.created_at), else_=insert.excluded.created_at)},
            where=insert.excluded.time_us > blip.c.time_us,
        )
        if self.plane.backend == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK})
        session.execute(statement, rows)

    def window_blips(self, window_id: str) -> list[Blip]:
        """The blips of a window, oldest first; their authors' handles and names are the identity
        cache's to fill in (`blip.with_identity`)."""
        blip, delivery = tables.Blip, tables.Delivery
        query = (select(blip).join(delivery, delivery.blip_uri == blip.uri)
                 .where(delivery.window_id == window_id).order_by(blip.time_us))
        with self.plane.reading() as session:
            return [Blip(row.uri, row.did, None, None, row.time_us, row.created_at, row.content or "", row.parent_uri)
                    for row in session.scalars(query)]

    def facts(self, uri: str) -> tables.Blip | None:
        """Everything the control plane knows of one blip (its mentions, tags, thread, refs)."""
        with self.plane.reading() as session:
            return session.scalars(select(tables.Blip).where(tables.Blip.uri == uri)).first()
