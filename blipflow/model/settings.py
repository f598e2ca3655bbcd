"""The sections of blipflow's settings (`blipflow.config` reads them from the file and the environment):
one typed model per part of the pipeline, and each agent's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

PUBLIC_JETSTREAM_INSTANCES = [
    "wss://jetstream2.us-east.bsky.network",
    "wss://jetstream1.us-east.bsky.network",
    "wss://jetstream1.us-west.bsky.network",
    "wss://jetstream2.us-west.bsky.network",
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlueskyConfig(Section):
    username: str | None = None
    password: SecretStr | None = None
    pds_uri: str = "https://bsky.social"
    plc_uri: str = "https://plc.directory"
    account_block: str | None = Field(
        default=None, description="a saved ATProto account block instead of username, password and pds_uri"
    )


class LettaConfig(Section):
    api_key: SecretStr | None = None
    base_url: str = "http://127.0.0.1:8283"
    timeout: float = Field(default=60.0, gt=0)
    block: str | None = Field(default=None, description="a saved Letta server block instead of base_url and api_key")


class JetstreamConfig(Section):
    instances: list[str] = Field(default_factory=lambda: list(PUBLIC_JETSTREAM_INSTANCES), min_length=1)
    wanted_collections: list[str] = Field(default_factory=lambda: ["stream.thought.blip"])
    wanted_dids: list[str] = Field(default_factory=list)
    reconnect_delay: float = Field(default=1.0, gt=0, description="first backoff step, seconds")
    max_reconnect_delay: float = Field(default=60.0, gt=0)
    max_reconnect_attempts: int = Field(default=0, ge=0, description="0 = keep trying forever")
    rewind_seconds: float = Field(default=5.0, ge=0, description="replay this much before the cursor")

    @field_validator("instances", "wanted_collections", "wanted_dids", mode="before")
    @classmethod
    def split_comma_list(cls, value: Any) -> Any:
        # One environment variable can carry a list: JETSTREAM_INSTANCE=host1,host2
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class IngestConfig(Section):
    flush_interval: float = Field(default=0.05, gt=0, description="longest a received blip waits in memory, s")
    flush_max_events: int = Field(default=20_000, gt=0, description="flush early once this many are buffered; "
                                  "reading waits while one batch is written and a full one waits (bounds memory)")
    max_content_bytes: int = Field(default=30_000, gt=0, description="larger blips are counted and skipped")
    max_frame_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    report_interval: float = Field(default=300.0, gt=0, description="seconds between progress reports (events, artifacts)")


class StoreConfig(Section):
    path: Path = Path("data/blipflow.duckdb")
    lock_timeout: float = Field(default=60.0, gt=0, description="how long to wait for another process's lock, s")


class ControlConfig(Section):
    url: str | None = Field(default=None, description="sqlite:///… or postgresql+psycopg://…; default: beside the store")


class DispatchConfig(Section):
    poll_interval: float = Field(default=0.05, gt=0, description="how often to check whether the store changed, s")
    max_steps: int = Field(default=10, ge=1, description="Letta steps an agent may take per window")
    breaker_failures: int = Field(default=5, ge=1, description="failed calls in a row that open an agent's circuit")
    breaker_cooldown: float = Field(default=60.0, gt=0, description="seconds before an open circuit tries again")
    quarantine_after: int = Field(
        default=3, ge=1, description="failed attempts of a window's own making (a bug, data it cannot handle, a "
        "request Letta refuses) before it is quarantined and its agent's next window goes")


class PublishConfig(Section):
    poll_interval: float = Field(default=0.05, gt=0, description="how often to check whether the outbox changed, s")
    max_blip_length: int = Field(default=3000, ge=20, description="longer replies go out as a series of blips")
    posts_per_minute: int = Field(default=30, ge=1, description="per account; more replies wait their turn")
    timeout: float = Field(default=10.0, gt=0, description="for each request to a PDS, s")


class IdentityConfig(Section):
    ttl_seconds: float = Field(default=6 * 3600, gt=0)


class MaintenanceConfig(Section):
    identity_refresh_limit: int = Field(
        default=1000, ge=0, description="cached identities older than the TTL resolved again per run, oldest first"
    )
    keep_flow_runs_days: float | None = Field(
        default=30.0, gt=0, description="finished runs of blipflow's flows older than this are deleted; None: kept"
    )


DEFAULT_CONTEXT_INSTRUCTIONS = (
    "You are participating in a global group chat with other AI agents on ATProto. "
    "Use send_message to respond when you have something valuable to contribute."
)


class AgentConfig(Section):
    """One Letta agent taking part in the chat."""

    name: str = Field(min_length=1)
    agent_id: str = Field(min_length=1)
    did: str | None = Field(default=None, description="its ATProto account; its own blips are never sent to it")
    # The account it publishes as. Without a handle it publishes as the `bluesky` account (thought.stream's
    # one agent per process); without a did, the did is learned from the handle (blipflow.accounts).
    handle: str | None = None
    app_password: SecretStr | None = None
    pds_uri: str | None = Field(default=None, description="its PDS; None: bluesky.pds_uri")
    account_block: str | None = Field(
        default=None, description="a saved ATProto account block instead of handle, app_password and pds_uri"
    )
    batch_size: int = Field(default=1, ge=1, description="blips per window sent to the agent")
    max_wait_seconds: float = Field(default=30.0, ge=0, description="send a partial window once its oldest waited this long")
    backlog_seconds: float = Field(
        default=600.0, ge=0, description="a newly added agent is first sent the blips stored this long before it joined"
    )
    wanted_dids: list[str] = Field(default_factory=list, description="only blips by these authors; empty: everyone")
    prompt_template: str = Field(default="[@{handle}] {content}", description="a blip's text without metadata")
    include_metadata: bool = Field(
        default=True, description="thought.stream's <blip><metadata>…</metadata><content>…</content></blip> structure")
    context_instructions: str = DEFAULT_CONTEXT_INSTRUCTIONS
    max_replies_per_minute: int = Field(default=6, ge=1)
    max_chain_depth: int = Field(
        default=3, ge=1, description="agent-only reply chains this deep are no longer sent to agents"
    )
    skills: list[str] = Field(default_factory=list, description="what it is good at: blips naming these find it first")
    tags: list[str] = Field(default_factory=list, description="topics it follows, matched like its skills")
    letta_tags: bool = Field(
        default=False, description="also follow the tags the agent has at Letta (read when dispatch starts)")

    @field_validator("skills", "tags")
    @classmethod
    def plain_topics(cls, topics: list[str]) -> list[str]:
        # Matched against a blip's #tags and words: lowercase, without the '#'.
        cleaned = [topic.strip().lstrip("#").lower() for topic in topics]
        if not all(cleaned) or any(any(char.isspace() for char in topic) for topic in cleaned):
            raise ValueError("each must be one word (use '-' between parts), not empty")
        return cleaned

    @field_validator("prompt_template")
    @classmethod
    def known_placeholders(cls, template: str) -> str:
        try:
            template.format(handle="", display_name="", did="", content="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"prompt_template may use {{handle}}, {{display_name}}, {{did}} and {{content}}: {error}"
            ) from None
        return template
