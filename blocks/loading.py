"""The blocks config.yaml names (`account_block:`, `letta.block:`; blipflow.config describes the syntax),
read from the Prefect API when the flows and the CLI load their settings. A block that cannot be read
is one line naming it: not saved (with the names that are), its type not registered, or the API away."""

from __future__ import annotations

from typing import Any

import httpx
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from pydantic import ValidationError

from blipflow.config import (
    ACCOUNT_BLOCK,
    LETTA_BLOCK,
    BlockReference,
    Settings,
    load_settings,
)
from blocks.atproto_account import AtprotoAccount
from blocks.letta_server import LettaServer

BLOCK_TYPES: dict[str, type[Block]] = {ACCOUNT_BLOCK: AtprotoAccount, LETTA_BLOCK: LettaServer}


def settings_from(config_file: str | None) -> Settings:
    """The settings of `config_file` (None: the default), with the blocks they name read from the Prefect API."""
    return load_settings(config_file, read_block=load_block)


def load_block(reference: BlockReference) -> dict[str, Any]:
    """The fields of the block `reference` names, secrets as SecretStr; LookupError says why it cannot be had."""
    block_type = BLOCK_TYPES[reference.kind]
    try:
        # The client rather than Block.load: no `loaded` event left queued behind a short CLI command
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name(reference.name, block_type.get_block_type_slug())
    except ObjectNotFound:
        raise LookupError(not_found(block_type, reference.name)) from None
    except httpx.HTTPError as error:
        raise LookupError(unreachable(reference.name, error)) from None
    try:
        return dict(block_type.model_validate(document.data))
    except ValidationError as error:
        problem = error.errors()[0]
        raise LookupError(f"the block {reference.name!r} is not a valid {block_type.get_block_type_name()} block "
                          f"({'.'.join(map(str, problem['loc']))}: {problem['msg']})") from None


def not_found(block_type: type[Block], name: str) -> str:
    slug = block_type.get_block_type_slug()
    try:
        with get_client(sync_client=True) as client:
            client.read_block_type_by_slug(slug)
            saved = client.read_block_documents_by_type(slug, include_secrets=False)
    except ObjectNotFound:
        return (f"no block {name!r}: {prefect_api()} has no {block_type.get_block_type_name()} blocks yet "
                f"(register the type: prefect block register -f {source_file(block_type)})")
    except httpx.HTTPError as error:
        return unreachable(name, error)
    names = ", ".join(sorted(document.name for document in saved if document.name)) or "none"
    return f"no {block_type.get_block_type_name()} block named {name!r} on {prefect_api()} (saved: {names})"


def unreachable(name: str, error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        reason = f"answered HTTP {error.response.status_code}"
    else:
        reason = f"is unreachable ({' '.join(str(error).split()) or type(error).__name__})"
    return f"cannot load the block {name!r}: {prefect_api()} {reason}"


def prefect_api() -> str:
    url = PREFECT_API_URL.value()
    return f"the Prefect API at {url}" if url else "Prefect's temporary local API (no PREFECT_API_URL)"


def source_file(block_type: type[Block]) -> str:
    return block_type.__module__.replace(".", "/") + ".py"
