"""Leases on SQLite and a real PostgreSQL: one holder while unexpired, renewed by its holder, taken over
once expired or released, and exactly one winner when processes race for one; a process's claims on a set
of them, asked on every poll, go to the database only every third of a lease's time."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.control.leases import Claims, Leases
from tests.support.control_plane import hold_lease, take_lease
from tests.support.racing import racing

TTL = timedelta(seconds=1)
CLAIM_TTL = timedelta(seconds=3)  # claims count time themselves: a third of it must outlast a busy machine's pauses


def test_one_holder_at_a_time_until_it_expires(control: ControlPlane) -> None:
    leases = Leases(control)
    assert leases.acquire("agent:scout", "dispatch-1", TTL)
    assert not leases.acquire("agent:scout", "dispatch-2", TTL)
    assert leases.acquire("agent:ada", "dispatch-2", TTL)  # another lease is another matter
    first = leases.held()["agent:scout"]
    assert leases.acquire("agent:scout", "dispatch-1", TTL)  # its holder extends it
    assert leases.renew("agent:scout", "dispatch-1", TTL)
    again = leases.held()["agent:scout"]
    assert (again.holder, again.acquired_at) == ("dispatch-1", first.acquired_at) and again.expires_at > first.expires_at
    assert not leases.renew("agent:scout", "dispatch-2", TTL)

    time.sleep(TTL.total_seconds() + 0.2)  # dispatch-1 stops renewing: killed, say
    assert "agent:scout" not in leases.held()
    assert not leases.renew("agent:scout", "dispatch-1", TTL)  # lapsed: its work may be another's now
    assert leases.acquire("agent:scout", "dispatch-2", TTL)
    taken = leases.held()["agent:scout"]
    assert taken.holder == "dispatch-2" and taken.acquired_at > first.acquired_at
    assert not leases.acquire("agent:scout", "dispatch-1", TTL)


def test_a_released_lease_is_free_at_once(control: ControlPlane) -> None:
    leases = Leases(control)
    assert leases.acquire("outbox:scout.test", "publish-1", timedelta(minutes=5))
    assert not leases.release("outbox:scout.test", "publish-2")  # not its lease to give up
    assert leases.release("outbox:scout.test", "publish-1")
    assert leases.acquire("outbox:scout.test", "publish-2", timedelta(minutes=5))


@pytest.mark.process
def test_processes_racing_for_a_lease_get_one_winner(control: ControlPlane, control_url: str) -> None:
    for round_ in range(2):  # a free lease, then the same one after the winner's expired
        outcomes = racing(take_lease, [(control_url, "agent:scout", f"racer-{round_}-{n}", 3.0) for n in range(5)])
        winners = [outcome["holder"] for outcome in outcomes if outcome["won"]]
        assert len(winners) == 1, outcomes
        # Read as the table holds it, expired or not: the racers' exits may outlast the lease on a busy machine.
        with control.reading() as session:
            held = session.get(tables.Lease, "agent:scout")
        assert held.holder == winners[0]
        time.sleep(max(0.0, (held.expires_at - datetime.now(timezone.utc)).total_seconds()) + 0.2)


@pytest.mark.process
def test_a_killed_holders_lease_is_taken_over_once_it_expires(control: ControlPlane, control_url: str) -> None:
    """A holder that renews keeps its lease past many TTLs; killed (SIGKILL: no release), its lease goes to
    the next taker once it expires — not before."""
    spawn = multiprocessing.get_context("spawn")
    held = spawn.Event()
    holder = spawn.Process(target=hold_lease, args=(control_url, "agent:scout", "dispatch-1", 1.0, held))
    holder.start()
    try:
        assert held.wait(120)
        leases = Leases(control)
        deadline = time.monotonic() + 3.0  # three TTLs: only renewing keeps it
        while time.monotonic() < deadline:
            assert not leases.acquire("agent:scout", "dispatch-2", TTL)
            time.sleep(0.1)
        expires_at = leases.held()["agent:scout"].expires_at
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
    while not leases.acquire("agent:scout", "dispatch-2", TTL):
        assert datetime.now(timezone.utc) < expires_at + timedelta(seconds=2), "not taken over after expiry"
        time.sleep(0.05)
    assert datetime.now(timezone.utc) >= expires_at - timedelta(milliseconds=50)  # not before it expired
    assert leases.held()["agent:scout"].holder == "dispatch-2"


def test_claims_take_the_free_keep_their_own_and_take_over_what_lapsed(control: ControlPlane) -> None:
    leases = Leases(control)
    first = Claims(leases, "publish-1", CLAIM_TTL, prefix="publish:")
    second = Claims(leases, "publish-2", CLAIM_TTL, prefix="publish:")
    assert first.held(["scout", "ada"]) == {"scout", "ada"}
    assert second.held(["scout", "ada", "bob"]) == {"bob"}
    asked = 0
    renew = leases.acquire

    def counted(*args):  # noqa: ANN002, ANN202
        nonlocal asked
        asked += 1
        return renew(*args)

    leases.acquire = counted
    for _ in range(20):  # asked on every poll, the database is asked only every third of a lease's time
        assert first.held(["scout", "ada"]) == {"scout", "ada"}
    assert asked <= 2  # once for each name, had a third of a lease's time gone by already
    deadline = time.monotonic() + 2 * CLAIM_TTL.total_seconds()
    while time.monotonic() < deadline:  # first renews as it is asked; second never gets them
        assert first.held(["scout", "ada"]) == {"scout", "ada"}
        assert second.held(["scout", "ada"]) == set()
        time.sleep(0.05)
    assert 0 < asked <= 2 * 2 * 7  # two claims, two names, three times a lease (+1): far fewer than the polls

    time.sleep(CLAIM_TTL.total_seconds() + 0.4)  # first stops asking (killed): its leases lapse
    assert second.held(["scout", "ada"]) == {"scout", "ada"}
    assert first.held(["scout", "ada"]) == set()  # it finds them another's when it asks again
    second.release()
    assert Claims(leases, "publish-3", CLAIM_TTL, prefix="publish:").held(["scout"]) == {"scout"}
