"""Writes committed together, on SQLite and a real PostgreSQL: each caller gets its own result or its own
error, as from a transaction of its own, however many threads write at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from blipflow.control import tables, together
from blipflow.control.engine import ControlPlane, duplicate_key
from blipflow.control.tables import now


def circuit(agent: str) -> dict:
    return {"agent": agent, "state": "closed", "failures": 0, "updated_at": now()}


def add_circuit(plane: ControlPlane, agent: str) -> str:
    def work(session) -> str:
        session.execute(insert(tables.Circuit), [circuit(agent)])
        return agent

    return plane.write_together(work, durable=False)


def circuits(plane: ControlPlane) -> list[str]:
    with plane.reading() as session:
        return sorted(session.scalars(select(tables.Circuit.agent)))


def test_writes_of_many_threads_are_each_committed_with_their_own_result(control: ControlPlane) -> None:
    agents = [f"agent{n:03}" for n in range(200)]
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda agent: add_circuit(control, agent), agents))
    assert results == agents
    assert circuits(control) == agents


def test_a_write_that_fails_raises_in_its_caller_and_leaves_the_others_of_its_group(control: ControlPlane) -> None:
    add_circuit(control, "taken")
    gate = threading.Event()

    def held_up(session) -> None:  # keeps the writer busy while the next writes queue up as one group
        gate.wait(10)
        session.execute(insert(tables.Circuit), [circuit("first")])

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(control.write_together, held_up)
        time.sleep(0.2)
        group = [pool.submit(add_circuit, control, agent) for agent in ("a", "taken", "b")]
        time.sleep(0.2)
        gate.set()
        first.result(10)
        with pytest.raises(IntegrityError) as refused:
            group[1].result(10)
        assert duplicate_key(refused.value)
        assert [group[0].result(10), group[2].result(10)] == ["a", "b"]
    assert circuits(control) == ["a", "b", "first", "taken"]
    with control.reading() as session:  # the failed write left nothing half-done behind
        assert session.scalar(select(func.count()).select_from(tables.Circuit)) == 4


def test_the_writer_thread_ends_when_idle_and_a_later_write_starts_another(control: ControlPlane,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(together, "IDLE_SECONDS", 0.1)

    def writers() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name == "blipflow-writer"]

    add_circuit(control, "early")
    deadline = time.monotonic() + 5
    while writers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not writers()
    assert add_circuit(control, "late") == "late"
    assert circuits(control) == ["early", "late"]
