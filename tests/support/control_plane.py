"""The control plane's database for tests, on both backends: `control_url` is parametrized over a SQLite
file and a REAL PostgreSQL (one cluster per session from tests/support/postgres.py, a fresh database per
test), so every test that takes it runs on each.

Workers for the tests where separate processes race (`tests.support.racing`: spawned, so each has its own
interpreter and its own connections) live here too: a test module's functions cannot be imported by a
spawned child.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from blipflow.config import AgentConfig
from blipflow.control.engine import ControlPlane
from blipflow.control.leases import Leases
from blipflow.control.ledger import Ledger
from blipflow.control.outbox import Outbox
from blipflow.control.schema import current
from blipflow.dispatch.coordinator import Coordinator
from blipflow.model.coordination_policy import CoordinationPolicy
from tests.support.letta_server import ensure_installed
from tests.support.postgres import Postgres, start_new_cluster

BACKENDS = ("sqlite", "postgresql")
_databases = itertools.count()


@pytest.fixture(scope="session")
def control_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = start_new_cluster(ensure_installed(), tmp_path_factory.mktemp("control-postgres"), name="control")
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(params=BACKENDS)
def control_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'control.sqlite'}"
    pg: Postgres = request.getfixturevalue("control_postgres")
    database = f"control_{next(_databases)}"
    with psycopg.connect(pg.uri("postgresql", "postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    return pg.uri("postgresql+psycopg", database)


@pytest.fixture
def control(control_url: str) -> Iterator[ControlPlane]:
    plane = ControlPlane(control_url)
    try:
        yield plane
    finally:
        plane.dispose()


# -- workers, run in separate processes --------------------------------------------------------------------


def decide_everything(url: str, agent: str, batch: int, start: Any) -> dict:
    """Open windows of `batch` blips for `agent` until none it was handed is left; report the ids of the
    windows this process was told it opened, and how many decisions it lost to another process."""
    plane = ControlPlane(url)
    ledger = Ledger(plane)
    opened, lost = [], 0
    start.wait()
    while candidates := ledger.handed_unsent(agent, batch):
        window_id = ledger.decide(agent, {}, [candidate.uri for candidate in candidates])
        if window_id is None:
            lost += 1
        else:
            opened.append(window_id)
    plane.dispose()
    return {"opened": opened, "lost": lost}


def coordinate_everything(url: str, agents: list[dict], policy: dict, start: Any) -> dict:
    """Run coordination rounds until every blip in the plane is decided; report how many blips this
    process decided and how many rounds it lost to another."""
    plane = ControlPlane(url)
    coordinator = Coordinator(plane, [AgentConfig(**agent) for agent in agents], CoordinationPolicy(**policy))
    decided, lost = 0, 0
    start.wait()
    while True:
        now = datetime.now(timezone.utc)
        position = coordinator.store.position(now - coordinator.backlog)
        if not coordinator.store.new_blips(position.through_seq, [], 1):
            break
        done = coordinator.step(now)
        decided += done
        lost += not done
    plane.dispose()
    return {"decided": decided, "lost": lost}


def start_plane(url: str, start: Any) -> dict:
    """Use a new control plane (which migrates it) when every worker is ready; report the revision found."""
    plane = ControlPlane(url)
    start.wait()
    with plane.reading() as session:
        revision = current(session.connection())
    plane.dispose()
    return {"revision": revision}


def take_lease(url: str, name: str, holder: str, ttl_seconds: float, start: Any) -> dict:
    """Try once to take the lease, when every worker is ready (`start` is their barrier); report whether it was won."""
    plane = ControlPlane(url)
    leases = Leases(plane)
    plane.migrate()  # not part of the race
    start.wait()
    won = leases.acquire(name, holder, timedelta(seconds=ttl_seconds))
    plane.dispose()
    return {"holder": holder, "won": won}


def hold_lease(url: str, name: str, holder: str, ttl_seconds: float, held: Any) -> None:
    """Take the lease and renew it three times a lease until killed; `held` is set once it is taken."""
    plane = ControlPlane(url)
    leases = Leases(plane)
    ttl = timedelta(seconds=ttl_seconds)
    while not leases.acquire(name, holder, ttl):
        time.sleep(ttl_seconds / 3)
    held.set()
    while leases.renew(name, holder, ttl):
        time.sleep(ttl_seconds / 3)
    raise SystemExit(f"{holder} lost lease {name} while renewing it")


def note_post(url: str, reply_id: str, uri: str, start: Any) -> dict:
    """Note the reply's only part as posted, when every worker is ready (`start` is their barrier)."""
    plane = ControlPlane(url)
    outbox = Outbox(plane)
    plane.migrate()
    start.wait()
    outbox.record_post(reply_id, 0, "racer.test", uri, "bafyracer", last=True)
    plane.dispose()
    return {"uri": uri}
