"""Each agent's circuit breaker as this dispatch process keeps it: stored in the control plane whenever it
changes (for `blipflow status`, and for the process that serves the agent next), announced when it opens
or closes, and taken up from there when this process begins to serve an agent, so that an agent another
process left alone stays alone for the rest of its cooldown."""

from __future__ import annotations

import time
from collections.abc import Iterator, Set
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from blipflow.config import AgentConfig, DispatchConfig
from blipflow.control.circuits import Circuits
from blipflow.dispatch.breaker import Breaker
from blipflow.model.ledger import Circuit
from blipflow.model.notices import Notice, Notify, agent_resource


class AgentCircuits:
    def __init__(self, stored: Circuits, agents: list[AgentConfig], config: DispatchConfig, notify: Notify) -> None:
        self.stored = stored
        self.notify = notify
        self.breakers = {
            agent.name: Breaker(agent.name, config.breaker_failures, config.breaker_cooldown) for agent in agents
        }
        self.taken_up: set[str] = set()  # agents whose circuit this process took up from the control plane

    def take_up(self, held: Set[str], clock: float, now: datetime) -> None:
        """Serve the agents `held` (this process's leases): those it did not serve a moment ago have their
        circuits restored as the control plane keeps them; an agent served again after another process had
        it is taken up anew."""
        self.taken_up &= held
        agents = held - self.taken_up
        if not agents:
            return
        circuits = self.stored.all()
        for agent in agents:
            circuit = circuits.get(agent)
            if circuit is not None:
                ago = None if circuit.opened_at is None else (now - circuit.opened_at).total_seconds()
                self.breakers[agent].restore(circuit.state, circuit.failures, ago, circuit.reason, clock)
        self.taken_up |= agents

    def allows(self, agent: str, clock: float) -> bool:
        with self.recorded(agent) as breaker:
            return breaker.allows(clock)

    @contextmanager
    def recorded(self, agent: str) -> Iterator[Breaker]:
        """The agent's breaker, stored when what happens inside changes it (rare: no write otherwise)."""
        breaker = self.breakers[agent]
        before = (breaker.state, breaker.failures)
        try:
            yield breaker
        finally:
            if (breaker.state, breaker.failures) != before:
                opened_at = None
                if breaker.opened_at is not None:
                    opened_at = datetime.now(timezone.utc) - timedelta(seconds=time.monotonic() - breaker.opened_at)
                self.stored.save(agent, Circuit(breaker.state, breaker.failures, opened_at, breaker.reason))
            if breaker.state != before[0]:
                self.notify(Notice(f"blipflow.agent.circuit.{breaker.state}", agent_resource(agent),
                                   {"failures": breaker.failures, "cooldown_seconds": breaker.cooldown,
                                    "reason": breaker.reason}))
