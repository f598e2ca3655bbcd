"""How runs say what they did, in the few words a run's name or state message has room for."""

from __future__ import annotations


def counted(number: int, thing: str) -> str:
    """`1 blip`, `2 blips`, `1 reply`, `3 replies`."""
    if number == 1:
        return f"1 {thing}"
    return f"{number} {thing[:-1]}ies" if thing.endswith("y") else f"{number} {thing}s"
