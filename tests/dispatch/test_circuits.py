"""An agent's circuit as dispatch processes keep it between them, in the control plane."""

import time
from datetime import datetime, timezone

from blipflow.config import AgentConfig, DispatchConfig
from blipflow.control.circuits import Circuits
from blipflow.control.engine import ControlPlane
from blipflow.dispatch.circuits import AgentCircuits
from blipflow.model.notices import Notice

SCOUT = AgentConfig(name="scout", agent_id="agent-1")


def circuits_of_a_process(control: ControlPlane, told: list[Notice]) -> AgentCircuits:
    return AgentCircuits(Circuits(control), [SCOUT], DispatchConfig(breaker_failures=2, breaker_cooldown=60),
                         told.append)


def test_a_circuit_one_process_opened_stays_open_in_the_process_that_serves_the_agent_next(control):
    told: list[Notice] = []
    first = circuits_of_a_process(control, told)
    first.take_up({"scout"}, time.monotonic(), datetime.now(timezone.utc))
    for _ in range(2):
        with first.recorded("scout") as breaker:
            breaker.failed(time.monotonic(), "Letta answered (HTTP 500)")
    assert [notice.event for notice in told] == ["blipflow.agent.circuit.open"]
    assert Circuits(control).all()["scout"].state == "open"

    second = circuits_of_a_process(control, told)
    second.take_up({"scout"}, time.monotonic(), datetime.now(timezone.utc))
    assert not second.allows("scout", time.monotonic())
    assert second.breakers["scout"].reason == "Letta answered (HTTP 500)"


def test_an_agent_served_again_after_another_process_had_it_is_taken_up_anew(control):
    mine = circuits_of_a_process(control, [])
    mine.take_up({"scout"}, time.monotonic(), datetime.now(timezone.utc))
    other = circuits_of_a_process(control, [])
    other.take_up({"scout"}, time.monotonic(), datetime.now(timezone.utc))
    with other.recorded("scout") as breaker:
        breaker.failed(time.monotonic(), "no such agent on the Letta server (HTTP 404)", at_once=True)
    mine.take_up(set(), time.monotonic(), datetime.now(timezone.utc))  # its lease went to the other
    assert mine.allows("scout", time.monotonic())  # what it last knew
    mine.take_up({"scout"}, time.monotonic(), datetime.now(timezone.utc))  # and came back
    assert not mine.allows("scout", time.monotonic())
