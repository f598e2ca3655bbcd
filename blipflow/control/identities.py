"""The authors' identities (DID → handle, display name) as dispatch last resolved them, so that naming the
authors of a window reads the control plane only: dispatch never opens the history store, whose lock one
process at a time may hold. A DID missing here, or resolved longer ago than the TTL, is resolved from the
network again (`blipflow.network.identity`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select

from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.model.blip import Identity


class Identities:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def identities(self, dids: list[str]) -> dict[str, Identity]:
        """What is known of `dids`, by DID (those never resolved are missing)."""
        if not dids:
            return {}
        with self.plane.reading() as session:
            rows = session.execute(OF_DIDS, {"dids": dids})
            return {row.did: Identity(row.did, row.handle, row.display_name, row.pds, row.fetched_at) for row in rows}

    def all(self) -> list[Identity]:
        """Every identity dispatch resolved (maintenance hands them to the history store, for analytics)."""
        identity = tables.Identity
        with self.plane.reading() as session:
            rows = session.scalars(select(identity).order_by(identity.did)).all()
        return [Identity(row.did, row.handle, row.display_name, row.pds, row.fetched_at) for row in rows]

    def save_identities(self, identities: list[Identity]) -> None:
        """Keep what resolved (each with the time it was resolved), replacing what was known."""
        if not identities:
            return
        insert = self.plane.upsert(tables.Identity)
        statement = insert.on_conflict_do_update(
            index_elements=["did"], set_={column: insert.excluded[column]
                                          for column in ("handle", "display_name", "pds", "fetched_at")})
        rows = [{"did": i.did, "handle": i.handle, "display_name": i.display_name, "pds": i.pds,
                 "fetched_at": i.fetched_at or tables.now()} for i in identities]
        with self.plane.writing(durable=False) as session:  # lost in a power cut: resolved again
            session.execute(statement, rows)

    def expired_identities(self, fetched_before: datetime, limit: int) -> list[str]:
        """DIDs last resolved before `fetched_before`, the longest-waiting first."""
        identity = tables.Identity
        query = (select(identity.did).where(identity.fetched_at < fetched_before)
                 .order_by(identity.fetched_at, identity.did).limit(limit))
        with self.plane.reading() as session:
            return list(session.scalars(query))


# Read for every window dispatch sends: built once, on the Core table (see `tables.WINDOWS`).
_identity = tables.IDENTITIES.c
OF_DIDS = (select(_identity.did, _identity.handle, _identity.display_name, _identity.pds, _identity.fetched_at)
           .where(_identity.did.in_(bindparam("dids", expanding=True))))
