"""What a replay reports: the price of a policy on a history, JSON-able."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field


def gini(values: Iterable[float]) -> float:
    """0: every agent is called as often as every other; towards 1: one agent takes every call."""
    ordered = sorted(values)
    total = sum(ordered)
    if not ordered or total == 0:
        return 0.0
    n = len(ordered)
    weighted = sum(position * value for position, value in enumerate(ordered, start=1))
    return 2 * weighted / (n * total) - (n + 1) / n


@dataclass
class ReplayReport:
    strategy: str
    agents: int
    human_blips: int = 0
    recorded_replies: int = 0  # our agents' replies in the history
    replies_kept: int = 0  # of those, the ones the policy would have caused (their agent was handed the parent)
    calls: int = 0  # (agent, blip) pairs handed: one Letta call each with windows of one blip
    calls_per_agent: dict[str, int] = field(default_factory=dict)
    addressed_pairs: int = 0  # (agent, blip) pairs where the blip mentions the agent or answers its blip
    addressed_handed: int = 0
    addressed_bounded: int = 0  # refused by a hard bound (closed thread, turns used, chain too deep), by design
    threads: int = 0
    threads_closed: int = 0  # closed to agents by termination (token or max agent turns)
    max_chain: int = 0  # the longest agent-only chain in the replayed history
    reasons: dict[str, int] = field(default_factory=dict)  # final decisions by reason

    @property
    def calls_per_human_blip(self) -> float:
        return self.calls / self.human_blips if self.human_blips else 0.0

    @property
    def addressed_recall(self) -> float:
        """Share of the addressed pairs no hard bound refused that were handed over (1.0: addressing always won)."""
        eligible = self.addressed_pairs - self.addressed_bounded
        return self.addressed_handed / eligible if eligible else 1.0

    @property
    def gini(self) -> float:
        return gini(self.calls_per_agent.values())

    def summary(self) -> dict[str, float | int]:
        return {"calls_per_human_blip": round(self.calls_per_human_blip, 3),
                "addressed_recall": round(self.addressed_recall, 4), "max_chain": self.max_chain,
                "gini": round(self.gini, 3)}

    def as_dict(self) -> dict:
        return {**asdict(self), **self.summary()}

