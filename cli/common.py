"""What every command shares: the config file asked for, the settings it gives, how output is asked for,
and Prefect's environment (set before Prefect is imported)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from blipflow.config import BlockReference, Settings, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Prefect reads these at import; the project keeps its Prefect state local and never phones home.
PREFECT_DEFAULTS = {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "blipflow",
}


class Output(str, Enum):
    human = "human"
    json = "json"


class Options:
    config_file: Optional[Path] = None


options = Options()


def settings() -> Settings:
    return load_settings(options.config_file, read_block=block_through_prefect)


def block_through_prefect(reference: BlockReference) -> dict[str, Any]:
    """A block the config names, from the Prefect API; Prefect is imported only now, after its environment is set."""
    prefect_environment()
    from blocks.loading import load_block

    return load_block(reference)


def prefect_environment() -> None:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
