"""The Letta server blipflow's agents live on, kept as a Prefect block so config.yaml names it instead
of holding its API key. Register the type once per Prefect server:

    prefect block register -f blocks/letta_server.py
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class LettaServer(Block):
    """The base URL and API key of a Letta server."""

    _block_type_name = "Letta Server"
    _description = "The Letta server blipflow's agents live on: its base URL and API key."

    base_url: str = Field(default="http://127.0.0.1:8283", description="e.g. https://api.letta.com")
    api_key: SecretStr = Field(description="the API key blipflow sends to the server")
