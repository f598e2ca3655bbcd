"""How runs say what they did, in the few words a run's name or state message has room for."""

from __future__ import annotations

from typing import TypeVar

from prefect import get_run_logger
from prefect.states import Completed, State

Result = TypeVar("Result")


def counted(number: int, thing: str) -> str:
    """`1 blip`, `2 blips`, `1 reply`, `3 replies`."""
    if number == 1:
        return f"1 {thing}"
    return f"{number} {thing[:-1]}ies" if thing.endswith("y") else f"{number} {thing}s"


def completed_saying(told: str, result: Result) -> State[Result]:
    """A task run's end that says what came of it, in its state message and in a line of its log."""
    get_run_logger().info("%s", told)
    return Completed(message=told, data=result)
