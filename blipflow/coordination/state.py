"""The coordination state: plain values, updated only by `coordinate`, so a run can be replayed and stored.

Mappings in these values are never changed in place: each round hands back new ones for what it touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class Floor:
    """Who may speak in a thread now, who is next, and what those next in line will be handed."""

    about: str  # the blip that opened it
    speakers: Mapping[str, float] = field(default_factory=dict)  # agent → when its turn ends if it stays silent
    queue: tuple[str, ...] = ()
    every_turn: bool = False  # `sequential`: the floor passes after each turn, not only after silence
    waiting: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # agent → blips carried to it when its turn comes

    @property
    def deadline(self) -> float | None:
        return min(self.speakers.values()) if self.speakers else None

    # Direct constructors rather than dataclasses.replace: the replay makes hundreds of thousands of these.
    def with_speakers(self, speakers: Mapping[str, float]) -> Floor:
        return Floor(self.about, speakers, self.queue, self.every_turn, self.waiting)

    def with_line(self, queue: tuple[str, ...], waiting: Mapping[str, tuple[str, ...]]) -> Floor:
        return Floor(self.about, self.speakers, queue, self.every_turn, waiting)


@dataclass(frozen=True, slots=True)
class ThreadState:
    root: str
    agent_turns: int = 0  # blips by agents, ours and others, in the thread
    turns: Mapping[str, int] = field(default_factory=dict)  # our agent → its blips in the thread
    spoke_at: Mapping[str, float] = field(default_factory=dict)  # our agent → when it last spoke in the thread
    last_agent_speaker: str | None = None
    closed: str | None = None  # why the thread is closed to agents
    floor: Floor | None = None
    active_at: float = float("-inf")  # its latest blip: a thread quiet long enough is forgotten

    def with_floor(self, floor: Floor | None) -> ThreadState:
        return ThreadState(self.root, self.agent_turns, self.turns, self.spoke_at, self.last_agent_speaker,
                           self.closed, floor, self.active_at)

    def quiet_since(self, moment: float) -> bool:
        return self.floor is None and self.active_at < moment


@dataclass(frozen=True, slots=True)
class AgentState:
    handed_at: tuple[float, ...] = ()  # when it was handed blips in the last minute (its attention budget)
    selected_at: float = float("-inf")  # when a strategy last chose it: the least recent goes first on a tie


@dataclass(frozen=True)
class CoordinationState:
    threads: Mapping[str, ThreadState] = field(default_factory=dict)
    agents: Mapping[str, AgentState] = field(default_factory=dict)
    rotation: int = 0  # round_robin's next position in the roster
    floors_due: Mapping[str, float] = field(default_factory=dict)  # thread → when a speaker's turn ends
    swept_at: float = float("-inf")  # when quiet threads were last forgotten

    def thread(self, root: str) -> ThreadState:
        return self.threads.get(root) or ThreadState(root)

    def as_dict(self) -> dict:
        """JSON-able, for storing the state as rows and reading it back with `state_from_dict`."""
        data = asdict(self)
        for agent in data["agents"].values():
            agent["selected_at"] = finite(agent["selected_at"])
        for thread in data["threads"].values():
            thread["active_at"] = finite(thread["active_at"])
        data["swept_at"] = finite(data["swept_at"])
        return data


def finite(moment: float) -> float | None:
    """JSON has no infinity: `never` is stored as null."""
    return None if moment == float("-inf") else moment


def moment_of(value: float | None) -> float:
    return float("-inf") if value is None else value


def state_from_dict(data: Mapping) -> CoordinationState:
    def floor(value: Mapping | None) -> Floor | None:
        if value is None:
            return None
        return Floor(value["about"], dict(value["speakers"]), tuple(value["queue"]), value["every_turn"],
                     {agent: tuple(uris) for agent, uris in value["waiting"].items()})

    threads = {root: ThreadState(root, t["agent_turns"], dict(t["turns"]), dict(t["spoke_at"]), t["last_agent_speaker"],
                                 t["closed"], floor(t["floor"]), moment_of(t["active_at"]))
               for root, t in data["threads"].items()}
    agents = {name: AgentState(tuple(a["handed_at"]), moment_of(a["selected_at"])) for name, a in data["agents"].items()}
    return CoordinationState(threads, agents, data["rotation"], dict(data["floors_due"]), moment_of(data["swept_at"]))
