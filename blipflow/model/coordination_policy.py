"""A coordination policy: the `coordination:` section of the config, or a policy file of its own.

Every strategy named here has its implementation (strategies.STRATEGIES, checked by the tests), and a
bad policy is one line naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

StrategyName = Literal["broadcast", "round_robin", "random", "relevance", "moderator", "sequential"]
STRATEGY_NAMES: tuple[str, ...] = StrategyName.__args__


class CoordinationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: StrategyName = Field(default="broadcast", description="who speaks in a thread")
    k: int = Field(default=2, ge=1, description="speakers a strategy grants the floor for a person's blip")
    agent_blip_k: int = Field(
        default=0, ge=0, description="speakers a strategy may add for an agent's blip beyond those it addresses")
    queue_length: int = Field(
        default=1, ge=0, description="next in line who take the floor when a speaker stays silent")
    turn_timeout: float = Field(default=120.0, gt=0, description="seconds a speaker holds the floor")
    seed: int = Field(default=0, description="for `random`: the same seed, the same choices")
    moderator: str | None = Field(default=None, description="the agent that chooses speakers for `moderator`")
    moderator_timeout: float = Field(
        default=20.0, gt=0, description="seconds the moderator has to answer before `relevance` chooses instead")
    order: list[str] = Field(default_factory=list, description="for `sequential`: agents in turn; empty: config order")
    attention_per_minute: int | None = Field(
        default=None, ge=1, description="blips an agent is handed per minute beyond those addressed to it; None: no limit")
    max_chain_depth: int = Field(default=3, ge=1, description="agent-only reply chains this deep are handed to nobody")
    max_agent_turns: int | None = Field(default=None, ge=1, description="agents' blips in a thread before it closes to agents")
    max_turns_per_agent: int | None = Field(default=None, ge=1, description="an agent's blips in one thread")
    allow_repeat_speaker: bool = Field(default=True, description="the last agent to speak in a thread may be chosen again")
    termination_token: str | None = Field(
        default=None, min_length=1, description="a blip containing it closes its thread to agents")
    cooldown_seconds: float = Field(default=0.0, ge=0, description="after speaking in a thread, an agent waits this long")
    known_agents: list[str] = Field(default_factory=list, description="DIDs of agents that are not ours")
    forget_threads_after: float = Field(
        default=7 * 86400.0, gt=0, description="seconds without a blip after which a thread's turns are forgotten")

    @field_validator("order")
    @classmethod
    def each_once(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError("names an agent more than once")
        return order

    @model_validator(mode="after")
    def moderator_named(self) -> CoordinationPolicy:
        if self.strategy == "moderator" and not self.moderator:
            raise ValueError("strategy `moderator` needs `moderator`: the agent that chooses")
        return self


class PolicyError(Exception):
    """A policy that cannot be used; the message is one line naming the field."""


def describe(error: ValidationError, where: str) -> str:
    item = error.errors()[0]
    field = ".".join(str(part) for part in item["loc"]) or "coordination"
    message = "unknown setting" if item["type"] == "extra_forbidden" else item["msg"]
    if "input" in item and not isinstance(item["input"], (dict, list)) and item["type"] != "extra_forbidden":
        message += f" (got {item['input']!r})"
    more = len(error.errors()) - 1
    return f"bad policy: {where}: {field}: {message}" + (f" (and {more} more)" if more else "")


def policy_from(data: object, where: str) -> CoordinationPolicy:
    try:
        return CoordinationPolicy.model_validate(data if data is not None else {})
    except ValidationError as error:
        raise PolicyError(describe(error, where)) from None


def load_policy(source: str | os.PathLike[str]) -> CoordinationPolicy:
    """A policy by strategy name (its defaults), or from a YAML file: its `coordination:` section, or the whole file."""
    if str(source) in STRATEGY_NAMES:
        return CoordinationPolicy(strategy=str(source))
    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PolicyError(f"bad policy: {path}: {error.strerror or error} (or name a strategy: "
                          f"{', '.join(STRATEGY_NAMES)})") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"bad policy: {path}: not valid YAML: {getattr(error, 'problem', None) or error}") from None
    if isinstance(data, dict) and "coordination" in data:
        data = data["coordination"]
    return policy_from(data, str(path))


def unknown_agents(policy: CoordinationPolicy, names: list[str]) -> str | None:
    """The first field naming an agent that is not configured, as `field: message`; None when all are known."""
    if policy.moderator is not None and policy.moderator not in names:
        return f"moderator: unknown agent {policy.moderator!r}"
    for index, name in enumerate(policy.order):
        if name not in names:
            return f"order.{index}: unknown agent {name!r}"
    return None
