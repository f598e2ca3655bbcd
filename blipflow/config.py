"""Settings: `config.yaml`, then environment variables, then built-in defaults.

Environment names follow thought.stream (`BLUESKY_USERNAME`, `LETTA_API_KEY`, ...) so an existing
thought.stream `.env` keeps working; everything else is `BLIPFLOW_<SECTION>__<FIELD>`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from blipflow.model.coordination_policy import CoordinationPolicy, unknown_agents
from blipflow.model.settings import (  # the sections, here for every reader of the settings
    AgentConfig,
    BlueskyConfig,
    ControlConfig,
    DispatchConfig,
    IdentityConfig,
    IngestConfig,
    JetstreamConfig,
    LettaConfig,
    MaintenanceConfig,
    PublishConfig,
    StoreConfig,
)

DEFAULT_CONFIG_FILE = Path("config.yaml")
CONFIG_FILE_ENV = "BLIPFLOW_CONFIG"


# thought.stream's variable names, mapped onto our fields.
LEGACY_ENV = {
    "BLUESKY_USERNAME": ("bluesky", "username"),
    "BLUESKY_PASSWORD": ("bluesky", "password"),
    "PDS_URI": ("bluesky", "pds_uri"),
    "LETTA_API_KEY": ("letta", "api_key"),
    "LETTA_BASE_URL": ("letta", "base_url"),
    "JETSTREAM_INSTANCE": ("jetstream", "instances"),
}
LETTA_AGENT_ID_ENV = "LETTA_AGENT_ID"


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line naming the field and its origin."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix="BLIPFLOW_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    bluesky: BlueskyConfig = Field(default_factory=BlueskyConfig)
    letta: LettaConfig = Field(default_factory=LettaConfig)
    jetstream: JetstreamConfig = Field(default_factory=JetstreamConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    agents: list[AgentConfig] = Field(default_factory=list)
    coordination: CoordinationPolicy = Field(default_factory=CoordinationPolicy)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, the file beats defaults; the file itself arrives as init kwargs.
        return (LegacyEnvSource(settings_cls), env_settings, init_settings)


class LegacyEnvSource(PydanticBaseSettingsSource):
    """thought.stream's environment variable names."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for env_name, (section, key) in LEGACY_ENV.items():
            if env_name in os.environ:
                values.setdefault(section, {})[key] = os.environ[env_name]
        return values


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))


def load_settings(path: str | os.PathLike[str] | None = None, *, read_block: BlockLoader | None = None) -> Settings:
    """Read the settings, or raise ConfigError with one line that names the bad field and where it came from.

    An explicitly named file must exist; the default `config.yaml` may be absent (embedded defaults).
    """
    file = config_path(path)
    explicit = path is not None or CONFIG_FILE_ENV in os.environ
    data = read_config_file(file, required=explicit)
    try:
        settings = Settings(**data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, file)) from None
    except SettingsError as error:
        # A BLIPFLOW_<SECTION>[__<FIELD>] value that should be JSON (a list or a section) and is not.
        section = str(error).split('"')[1] if str(error).count('"') >= 2 else ""
        names = sorted(n for n in os.environ if n.upper().startswith(f"BLIPFLOW_{section}".upper()))
        raise ConfigError(f"bad config: {', '.join(names) or 'environment'}: {section}: not valid JSON") from None
    if not settings.agents and os.environ.get(LETTA_AGENT_ID_ENV):
        # thought.stream runs one agent per process, named by LETTA_AGENT_ID.
        settings.agents = [AgentConfig(name="default", agent_id=os.environ[LETTA_AGENT_ID_ENV])]
    unknown = unknown_agents(settings.coordination, [agent.name for agent in settings.agents])
    if unknown is not None:
        raise ConfigError(f"bad config: {file}: coordination.{unknown}")
    return with_blocks(settings, file, read_block)


def read_config_file(file: Path, *, required: bool) -> dict[str, Any]:
    if not file.exists():
        if required:
            raise ConfigError(f"bad config: {file}: config file not found")
        return {}
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"bad config: {file}: cannot read config file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"bad config: {file}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        detail = getattr(error, "problem", None) or " ".join(str(error).split())  # one line, always
        raise ConfigError(f"bad config: {file}:{line} not valid YAML: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"bad config: {file}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def describe_validation_error(error: ValidationError, file: Path) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        origin = env_origin(item["loc"]) or str(file)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        elif item["type"] == "missing":
            message = "required setting is missing"
        elif "input" in item and not isinstance(item["input"], (dict, list)) and "password" not in field and "key" not in field:
            message = f"{message} (got {item['input']!r})"
        problems.append(f"{origin}: {field}: {message}")
    head = problems[0]
    if len(problems) > 1:
        head += f" (and {len(problems) - 1} more: " + "; ".join(problems[1:]) + ")"
    return f"bad config: {head}"


def env_origin(loc: tuple[Any, ...]) -> str | None:
    """The environment variable that set the field at `loc`, if one did."""
    if len(loc) < 2:
        return None
    section, key = str(loc[0]), str(loc[1])
    for env_name, target in LEGACY_ENV.items():
        if target == (section, key) and env_name in os.environ:
            return env_name
    nested = f"BLIPFLOW_{section}__{key}".upper()
    if nested in {name.upper() for name in os.environ}:
        return nested
    return None


# -- credentials kept in Prefect blocks ----------------------------------------------------------
# Instead of holding a secret, a section may name a block saved on the Prefect server:
#   bluesky: {account_block: NAME}     agents: [{name: scout, agent_id: ..., account_block: NAME}]
#   letta: {block: NAME}
# An account block stands for the handle, app password and PDS URL; a Letta block for the base URL and
# API key. This library never imports Prefect: whoever can reach Prefect hands `load_settings` a
# `read_block` (blocks/loading.py's, as the flows and the CLI do); without one, a named block is refused.

ACCOUNT_BLOCK = "account"
LETTA_BLOCK = "letta"
# The settings each kind of block stands for, and the block field each comes from.
BLOCK_FIELDS = {
    ACCOUNT_BLOCK: {"handle": "handle", "app_password": "app_password", "pds_uri": "pds_url"},
    LETTA_BLOCK: {"base_url": "base_url", "api_key": "api_key"},
}
# The `bluesky` section names its account's fields as thought.stream did.
BLUESKY_ACCOUNT_FIELDS = {"username": "handle", "password": "app_password", "pds_uri": "pds_url"}


@dataclass(frozen=True)
class BlockReference:
    """A setting that names a saved block instead of holding the secret itself."""

    setting: str  # where the config names it: "letta.block", "agents.0.account_block"
    name: str  # the block's name on the Prefect server
    kind: str  # ACCOUNT_BLOCK or LETTA_BLOCK


BlockLoader = Callable[[BlockReference], Mapping[str, Any]]
"""The block's fields by name; a block that cannot be read raises LookupError saying why, in one line."""

def block_references(settings: Settings) -> list[tuple[BlockReference, BaseModel, dict[str, str]]]:
    """Each block the settings name, with the section it fills in: which of its settings from which block field."""
    named: list[tuple[BlockReference, BaseModel, dict[str, str]]] = []
    if settings.bluesky.account_block:
        named.append((BlockReference("bluesky.account_block", settings.bluesky.account_block, ACCOUNT_BLOCK),
                      settings.bluesky, BLUESKY_ACCOUNT_FIELDS))
    if settings.letta.block:
        named.append((BlockReference("letta.block", settings.letta.block, LETTA_BLOCK),
                      settings.letta, BLOCK_FIELDS[LETTA_BLOCK]))
    for index, agent in enumerate(settings.agents):
        if agent.account_block:
            named.append((BlockReference(f"agents.{index}.account_block", agent.account_block, ACCOUNT_BLOCK),
                          agent, BLOCK_FIELDS[ACCOUNT_BLOCK]))
    return named


def with_blocks(settings: Settings, file: Path, read_block: BlockLoader | None) -> Settings:
    """The settings with the fields of every block they name filled in; ConfigError names a block that
    cannot be read, or a setting given both ways."""
    named = block_references(settings)
    for reference, section, fields in named:
        defaults = type(section).model_fields
        also_set = [field for field in fields if getattr(section, field) != defaults[field].default]
        if also_set:
            where = reference.setting.rsplit(".", 1)[0]
            origin = env_origin((where, also_set[0])) or str(file)
            raise ConfigError(f"bad config: {origin}: {where}.{also_set[0]}: set here and by the block "
                              f"{reference.name!r} ({reference.setting}); keep one of them")
    if named and read_block is None:
        reference = named[0][0]
        raise ConfigError(f"bad config: {file}: {reference.setting}: the block {reference.name!r} can only be read "
                          "by blipflow's CLI and flows")
    for reference, section, fields in named:
        try:
            values = read_block(reference)
        except LookupError as error:
            raise ConfigError(f"bad config: {file}: {reference.setting}: {error.args[0]}") from None
        for field, source in fields.items():
            setattr(section, field, values[source])  # the sections are this load's own: filled in place
    return settings
