"""The feed: what ingest stored in the history store goes on into the control plane, for dispatch.

The two are separate databases, so no transaction spans both. Ingest writes a batch to the history store
first; then the feed adds the batch's blips to the control plane and, in the same control-plane
transaction, moves its position to the moment that batch began. Every blip the history store wrote in a
later batch carries a later `updated_at` (the store stamps each batch with its transaction's start), so
whatever moment ingest dies, a restart reads back from the store what was written since the position and
feeds it again: nothing is lost, and since adding a blip is an upsert by uri in which the later operation
wins, nothing is doubled. A failed feed (the control plane away) is caught up the same way with the next
batch, before the position may move past it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from itertools import groupby

import orjson
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from blipflow.control import tables
from blipflow.control.blips import Blips
from blipflow.control.engine import ControlPlane, ControlPlaneError
from blipflow.control.facts import BlipFacts, facts_of
from blipflow.model.blip import BLIP_COLLECTION, BlipRow
from blipflow.store.history import Store

log = logging.getLogger(__name__)

# The position is a moment on this machine's clock; reading back a little earlier than it absorbs a clock
# that was set back meanwhile (what is read twice is only added twice, which changes nothing).
CLOCK_MARGIN = timedelta(minutes=1)
CATCH_UP_PAGE = 5_000
BEGINNING = datetime(1970, 1, 1, tzinfo=timezone.utc)
BLIP_PATH = f"/{BLIP_COLLECTION}/"


class Feed:
    def __init__(self, plane: ControlPlane, store: Store) -> None:
        self.plane = plane
        self.store = store
        self.blips = Blips(plane)
        self.name = str(store.path.resolve())
        self.behind_since: datetime | None = None  # a batch that could not be fed: caught up with the next one

    def catch_up(self) -> int:
        """Feed what the store wrote since the position (everything, the first time); returns how many blips.
        The position moves only once all of it is fed: dying midway, the next catch-up reads it all again."""
        position = self.position()
        since = BEGINNING if position is None else position - CLOCK_MARGIN
        fed, after = 0, None
        while page := self.store.blips_written_since(since, after, CATCH_UP_PAGE):
            for stored_at, operations in groupby(page, key=lambda operation: operation.stored_at):
                self.blips.add([facts_of(op.uri, op.did, op.time_us, op.cid,
                                         None if op.record is None else orjson.loads(op.record))
                                for op in operations], stored_at=stored_at)
            fed += len(page)
            after = (page[-1].updated_at, page[-1].uri)
        if after is not None:
            with self.plane.writing() as session:
                self.advance(session, after[0])
            log.info("fed the control plane %d blips the store wrote since %s", fed, since.isoformat())
        return fed

    def stored(self, rows: Iterable[BlipRow], began_at: datetime) -> None:
        """A batch that began at `began_at` is in the store: its blips go on. A failure to feed them is
        logged, and they are read back from the store with the next batch."""
        try:
            if self.behind_since is not None:
                self.catch_up()
            else:
                self.add(rows, began_at)
            self.behind_since = None
        except (ControlPlaneError, SQLAlchemyError) as error:
            if self.behind_since is None:
                log.warning("control plane %s: %s; the blips stored meanwhile are fed once it answers",
                            self.plane.name, str(error).splitlines()[0])
                self.behind_since = began_at

    def add(self, rows: Iterable[BlipRow], began_at: datetime) -> None:
        facts = [facts_of_row(row) for row in rows if BLIP_PATH in row[0]]
        with self.plane.writing() as session:
            self.blips.add_within(session, facts, stored_at=began_at)
            self.advance(session, began_at)

    def advance(self, session: Session, stored_since: datetime) -> None:
        """Move the position, in the transaction that fed what it moves past."""
        insert = self.plane.upsert(tables.FeedPosition).values(name=self.name, stored_since=stored_since,
                                                               updated_at=tables.now())
        session.execute(insert.on_conflict_do_update(index_elements=["name"], set_={
            "stored_since": insert.excluded.stored_since, "updated_at": insert.excluded.updated_at}))

    def position(self) -> datetime | None:
        with self.plane.reading() as session:
            row = session.get(tables.FeedPosition, self.name)
        return None if row is None else row.stored_since


def facts_of_row(row: BlipRow) -> BlipFacts:
    """The facts of an event as ingest hands it to the store (uri, time_us, operation, the event's JSON)."""
    uri, time_us, _, raw = row
    event = orjson.loads(raw)
    commit = event.get("commit") or {}
    record = None if commit.get("operation") == "delete" else commit.get("record", {})
    return facts_of(uri, event.get("did", ""), time_us, commit.get("cid"), record)
