"""Which agents this dispatch process serves, when several share them (on one machine, or on several
with the control plane on PostgreSQL).

Each agent is a lease (`dispatch:agent:<name>`) that one process at a time holds; each process also holds
one for itself (`dispatch:process:<holder>`), so every process can count how many are alive and take
its share of the agents: as many as the agents divided by the processes, rounded up. A process with more
than its share lets an agent go only while that agent has no window under way, so a window is never
sent by two processes. A process that dies stops renewing: its leases expire and the others take its
agents over within a lease and one round. One that died on this very machine is seen to be gone at once
(its process id no longer runs), so a restart does not wait for its leases to expire.

A background thread keeps the leases, whatever the caller's loop is doing; `holds` answers from memory
with a margin, so that an agent whose renewal is overdue is taken for lost before another may take it.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta

from blipflow.control.leases import Leases

log = logging.getLogger(__name__)

AGENT_LEASE = "dispatch:agent:"
PROCESS_LEASE = "dispatch:process:"
LEASE_SECONDS = 15.0
RENEW_EVERY = 4.0  # seconds between rounds of renewing and taking leases
MARGIN = 0.2  # of a lease: so long before its expiry it is no longer counted on (3 s of the default 15)

# One holder per process: a dispatcher built again in the same process carries on with the same leases.
HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class AgentShares:
    def __init__(self, leases: Leases, agents: Iterable[str], *, idle: Callable[[str], bool],
                 holder: str = HOLDER, lease_seconds: float = LEASE_SECONDS, renew_every: float = RENEW_EVERY) -> None:
        self.leases = leases
        self.agents = sorted(agents)
        self.idle = idle  # whether an agent has no window under way (only then is it let go)
        self.holder = holder
        self.ttl = timedelta(seconds=lease_seconds)
        self.renew_every = renew_every
        self.until: dict[str, float] = {}  # agent → monotonic time after which its lease is not counted on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the first share now, then keep it from a background thread."""
        if self._thread is None:
            self.keep()
            # in the caller's context, so that what the thread logs is the caller's (a flow run's, say)
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._keep_until_stopped,),
                                            name="blipflow-leases", daemon=True)
            self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop keeping the leases; `release` hands them to the others at once rather than at their expiry."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if release:
            for agent in list(self.until):
                self.leases.release(AGENT_LEASE + agent, self.holder)
            self.leases.release(PROCESS_LEASE + self.holder, self.holder)
        self.until = {}

    def holds(self, agent: str) -> bool:
        return time.monotonic() < self.until.get(agent, 0.0)

    def held(self) -> set[str]:
        now = time.monotonic()
        return {agent for agent, until in self.until.items() if now < until}

    def _keep_until_stopped(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self.keep()
            except Exception as error:  # noqa: BLE001 - the control plane away: leases run out, taken for lost
                log.warning("dispatch %s could not keep its agents' leases: %s", self.holder,
                            str(error).splitlines()[0] if str(error) else type(error).__name__)

    def keep(self) -> None:
        """One round: renew what is held, let go of what is beyond the share, take free agents up to it."""
        started = time.monotonic()
        until = started + self.ttl.total_seconds() * (1 - MARGIN)
        self.leases.acquire(PROCESS_LEASE + self.holder, self.holder, self.ttl)
        leases = self.leases.held()
        alive = [name for name, lease in leases.items()
                 if name.startswith(PROCESS_LEASE) and not gone(lease.holder)]
        share = math.ceil(len(self.agents) / max(1, len(alive)))
        renewed = self.leases.renew_all([AGENT_LEASE + agent for agent in self.until], self.holder, self.ttl)
        held: dict[str, float] = {}
        for agent in sorted(self.until):
            if AGENT_LEASE + agent in renewed:
                held[agent] = until
            else:
                log.warning("dispatch %s: the lease on agent %s ran out; another process serves it now",
                            self.holder, agent)
        for agent in sorted(held, reverse=True):
            if len(held) > share and self.idle(agent):
                del held[agent]
                self.leases.release(AGENT_LEASE + agent, self.holder)
                log.info("dispatch %s hands agent %s to another process (%d processes share %d agents)",
                         self.holder, agent, len(alive), len(self.agents))
        for agent in self.agents:
            if len(held) >= share:
                break
            if agent in held:
                continue
            name = AGENT_LEASE + agent
            other = leases.get(name)
            if other is not None and other.holder != self.holder and gone(other.holder):
                self.leases.release(name, other.holder)  # its process died on this machine: no need to wait
            if self.leases.acquire(name, self.holder, self.ttl):
                held[agent] = until
                log.info("dispatch %s serves agent %s", self.holder, agent)
        self.until = held


def gone(holder: str) -> bool:
    """Whether the holder is a process of this machine that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: running
        return False
    return False
