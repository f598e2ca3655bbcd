"""Dispatch: each agent's windows of new blips, sent through Letta exactly once, replies to the outbox.

Planning and delivering are separate steps so that the Prefect layer can make each delivery a task
run with its own retries. Every step leaves the ledger consistent: a window is recorded (with its blips)
before it is sent, marked `sending` just before the call, and finished with its replies in one
transaction. A window found `sending` after a crash is first looked up at Letta by the ids its
messages carried (so is a failed one: a timeout may come after the agent got it), so it is finished
from the answer already given instead of being sent again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from blipflow.blip import with_identity
from blipflow.breaker import Breaker
from blipflow.config import AgentConfig, DispatchConfig
from blipflow.identity import IdentityResolver
from blipflow.letta import AgentCallFailed, Answer, LettaGateway, StillAnswering
from blipflow.policy import decide
from blipflow.prompt import window_messages
from blipflow.store import Store

log = logging.getLogger(__name__)

CANDIDATES_PER_ROUND = 500
IN_FLIGHT_MARGIN = 5.0  # seconds beyond the Letta timeout
RECHECK_SECONDS = 2.0  # between looks at Letta for a window that may still be answered there


@dataclass(frozen=True)
class Window:
    id: str
    agent: str
    state: str
    size: int
    sent_at: datetime | None = None
    settled: bool | None = None

    def unsettled(self) -> bool:
        """Sent, and not known to be over: Letta may still be answering it."""
        return self.sent_at is not None and (self.state == "sending" or (self.state == "failed" and not self.settled))


@dataclass(frozen=True)
class Delivery:
    window: str
    agent: str
    blips: int
    replies: int
    letta_ms: float
    outcome: str  # answered | silent | recovered | in_flight (looked at again later)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        gateway: LettaGateway,
        resolver: IdentityResolver,
        agents: list[AgentConfig],
        config: DispatchConfig,
        *,
        letta_timeout: float,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.resolver = resolver
        self.agents = {agent.name: agent for agent in agents}
        self.agent_dids = [agent.did for agent in agents if agent.did]
        # Letta finishes a call even when its caller is gone, and records the messages only at the end:
        # a window sent this recently without a trace at Letta may still be answered there.
        self.in_flight_for = timedelta(seconds=letta_timeout + IN_FLIGHT_MARGIN)
        self.rechecks: dict[str, float] = {}  # window id → when to look at Letta again (monotonic)
        self.breakers = {
            agent.name: Breaker(agent.name, config.breaker_failures, config.breaker_cooldown) for agent in agents
        }

    def plan(self) -> list[Window]:
        """Open the windows that are ready, and return every window waiting to be delivered — new ones,
        ones a crash left behind, and failed ones whose agent's circuit lets calls through again."""
        now = datetime.now(timezone.utc)
        for agent in self.agents.values():
            if self.breakers[agent.name].allows(time.monotonic()):
                self.open_windows(agent, now)
        waiting = [Window(*row) for row in self.store.windows_in(["pending", "sending", "failed"])]
        return [w for w in waiting if w.agent in self.agents and self.rechecks.get(w.id, 0.0) <= time.monotonic()
                and self.breakers[w.agent].allows(time.monotonic())]

    def maybe_in_flight(self, window: Window, now: datetime) -> bool:
        return window.unsettled() and window.sent_at is not None and now - window.sent_at < self.in_flight_for

    def open_windows(self, agent: AgentConfig, now: datetime) -> None:
        while True:
            candidates = self.store.undelivered(agent.name, self.agent_dids, CANDIDATES_PER_ROUND)
            if not candidates:
                return
            replied = self.store.replies_since(agent.name, now - timedelta(minutes=1))
            decision = decide(agent, candidates, replies_last_minute=replied, now=now)
            if decision.held:
                log.info("holding back: %s", decision.held)
            window_id = self.store.decide(agent.name, decision.skips, decision.window)
            if window_id is None and not decision.skips:
                return

    def deliver(self, window: Window) -> Delivery:
        """Send one window and store the answer; AgentCallFailed says whether a retry may help."""
        window = Window(*self.store.window(window.id))  # a retry must see what the last attempt left
        agent = self.agents[window.agent]
        breaker = self.breakers[agent.name]
        try:
            answer, outcome = self.call(agent, window)
        except StillAnswering:
            self.rechecks[window.id] = time.monotonic() + RECHECK_SECONDS
            return Delivery(window.id, agent.name, window.size, 0, 0.0, "in_flight")
        except AgentCallFailed as failure:
            breaker.failed(time.monotonic())
            self.store.fail_window(window.id, str(failure), settled=failure.settled)
            raise
        breaker.succeeded()
        self.store.finish_window(window.id, agent.name, answer.replies, answer.letta_ms)
        outcome = outcome or ("answered" if answer.replies else "silent")
        return Delivery(window.id, agent.name, window.size, len(answer.replies), answer.letta_ms, outcome)

    def call(self, agent: AgentConfig, window: Window) -> tuple[Answer, str | None]:
        if window.unsettled():  # it may have arrived before the crash or the timeout
            earlier = self.gateway.answer_already_given(agent.name, agent.agent_id, window.id)
            if earlier is not None:
                return earlier, "recovered"
            if self.maybe_in_flight(window, datetime.now(timezone.utc)):
                raise StillAnswering(window.id)
        blips = self.store.window_blips(window.id)
        identities = self.resolver.resolve([blip.did for blip in blips])
        messages = window_messages(agent, [with_identity(blip, identities[blip.did]) for blip in blips])
        self.store.mark_sending(window.id)
        return self.gateway.send(agent.name, agent.agent_id, messages, window.id), None
