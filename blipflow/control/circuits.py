"""Each agent's circuit breaker as dispatch last left it, for `blipflow status` and the next dispatch
process (which takes up an open circuit for the rest of its cooldown)."""

from __future__ import annotations

from sqlalchemy import select

from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.model.ledger import Circuit


class Circuits:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def save(self, agent: str, circuit: Circuit) -> None:
        insert = self.plane.upsert(tables.Circuit).values(agent=agent, state=circuit.state, failures=circuit.failures,
                                                          opened_at=circuit.opened_at, reason=circuit.reason,
                                                          updated_at=tables.now())
        changed = {column: insert.excluded[column] for column in ("state", "failures", "opened_at", "reason",
                                                                  "updated_at")}
        with self.plane.writing() as session:
            session.execute(insert.on_conflict_do_update(index_elements=["agent"], set_=changed))

    def all(self) -> dict[str, Circuit]:
        """Every agent's circuit, by agent name."""
        with self.plane.reading() as session:
            rows = session.scalars(select(tables.Circuit).order_by(tables.Circuit.agent)).all()
        return {row.agent: Circuit(row.state, row.failures, row.opened_at, row.reason) for row in rows}
