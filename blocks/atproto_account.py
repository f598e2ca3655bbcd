"""An ATProto account blipflow publishes as, kept as a Prefect block so config.yaml names it instead
of holding its app password. Register the type once per Prefect server:

    prefect block register -f blocks/atproto_account.py
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class AtprotoAccount(Block):
    """The handle, app password and PDS of an ATProto account."""

    _block_type_name = "ATProto Account"
    _description = "An ATProto account blipflow publishes blips as: its handle, app password and PDS."

    handle: str = Field(description="the account's handle, e.g. scout.example.com")
    app_password: SecretStr = Field(description="an app password of the account (never its main password)")
    pds_url: str = Field(default="https://bsky.social", description="the account's PDS")
