"""Leases: work that one process at a time may do (an agent's windows, the outbox of an account), so that
several processes — on several machines, with PostgreSQL — share the work, and one takes over what
another left when that one stops renewing (killed, cut off) and its lease expires.

A lease lost in a power cut is simply taken again (the machine was down: its leases expired), so none of
these writes waits for the disk (`durable=False`).

Taking a lease is one statement (an insert that, on conflict, updates only when the lease is the
taker's own or has expired), so two processes racing for it cannot both win. Expiry is judged by the
database's clock on PostgreSQL, the one clock every machine shares; SQLite serves one machine, whose
clock it is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, or_, select, update
from sqlmodel import Session

from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.control.tables import UtcDateTime


@dataclass(frozen=True)
class Held:
    """A lease in force."""

    name: str
    holder: str
    expires_at: datetime
    acquired_at: datetime


class Leases:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def acquire(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take the lease for `ttl`, or extend it when `holder` has it already; False while another holds it."""
        lease = tables.Lease.__table__
        with self.plane.writing(durable=False) as session:
            at = self.clock(session)
            insert = self.plane.upsert(lease).values(name=name, holder=holder, expires_at=at + ttl, acquired_at=at)
            taken = insert.on_conflict_do_update(
                index_elements=["name"],
                set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at,
                      "acquired_at": case((lease.c.holder == insert.excluded.holder, lease.c.acquired_at),
                                          else_=insert.excluded.acquired_at)},
                where=or_(lease.c.holder == insert.excluded.holder, lease.c.expires_at <= insert.excluded.acquired_at),
            ).returning(lease.c.holder)
            return session.execute(taken).first() is not None

    def renew(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Extend a lease still in force; False when `holder` no longer has it (it expired, or was released
        or taken over): the work it covered may be another's now."""
        return name in self.renew_all([name], holder, ttl)

    def renew_all(self, names: Iterable[str], holder: str, ttl: timedelta) -> set[str]:
        """`renew` for many leases in one transaction: those of `names` that `holder` still has."""
        lease = tables.Lease.__table__
        names = list(names)
        if not names:
            return set()
        with self.plane.writing(durable=False) as session:
            at = self.clock(session)
            renewed = session.execute(update(lease).where(lease.c.name.in_(names), lease.c.holder == holder,
                                                          lease.c.expires_at > at)
                                      .values(expires_at=at + ttl).returning(lease.c.name))
            return set(renewed.scalars())

    def release(self, name: str, holder: str) -> bool:
        """Give the lease up at once (another may take it without waiting for it to expire)."""
        lease = tables.Lease
        with self.plane.writing(durable=False) as session:
            return session.execute(delete(lease).where(lease.name == name, lease.holder == holder)).rowcount == 1

    def held(self) -> dict[str, Held]:
        """The leases in force, by name."""
        lease = tables.Lease
        with self.plane.reading() as session:
            at = self.clock(session)
            rows = session.scalars(select(lease).where(lease.expires_at > at).order_by(lease.name)).all()
        return {row.name: Held(row.name, row.holder, row.expires_at, row.acquired_at) for row in rows}

    def clock(self, session: Session) -> datetime:
        if self.plane.backend == "postgresql":
            return session.execute(select(func.clock_timestamp().cast(UtcDateTime()))).scalar_one()
        return tables.now()


class Claims:
    """The leases one process keeps on the work it may do (each of an agent's outbox, say): asked which of
    some names it holds, it takes those free, keeps those it has and lets go of those it lost.

    It is asked on every poll, so it goes to the database for a name at most every third of a lease's time:
    a lease it holds is renewed well before it expires, and one another holds is tried again that often, so
    work a stopped process held is taken over at most `ttl` plus a third of it after its last renewal."""

    def __init__(self, leases: Leases, holder: str, ttl: timedelta, *, prefix: str) -> None:
        self.leases = leases
        self.holder = holder
        self.ttl = ttl
        self.prefix = prefix  # what the work is: `publish:` for the outbox of each agent
        self._looked: dict[str, tuple[float, bool]] = {}  # name → when the database was last asked, and if held

    def held(self, names: Iterable[str]) -> set[str]:
        """Which of `names` this process holds now."""
        moment = time.monotonic()
        mine = set()
        for name in names:
            looked = self._looked.get(name)
            if looked is None or moment - looked[0] >= self.ttl.total_seconds() / 3:
                # Taking a lease one holds extends it; one that lapsed unclaimed is simply taken again.
                looked = (moment, self.leases.acquire(self.prefix + name, self.holder, self.ttl))
                self._looked[name] = looked
            if looked[1]:
                mine.add(name)
        return mine

    def release(self) -> None:
        """Let go of every lease held, so that another process takes the work over at once."""
        for name, (_, held) in self._looked.items():
            if held:
                self.leases.release(self.prefix + name, self.holder)
        self._looked.clear()
