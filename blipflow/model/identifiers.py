"""The names an account goes by, in ATProto's syntax (https://atproto.com/specs): its DID and its handle.

Whatever comes from the network — an event, a DID document, a PDS's answer — is a DID or a handle only when
it matches, so none with a line break, a slash or a megabyte in it reaches a prompt, a record or the store.
The patterns are RE2- and Python-compatible (the store matches them in SQL too)."""

from __future__ import annotations

import re
from typing import TypeGuard

DID_PATTERN = r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]"
HANDLE_PATTERN = r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
MAX_DID_LENGTH = 2048
MAX_HANDLE_LENGTH = 253

DID_SYNTAX, HANDLE_SYNTAX = re.compile(DID_PATTERN), re.compile(HANDLE_PATTERN)


def is_did(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= MAX_DID_LENGTH and DID_SYNTAX.fullmatch(value) is not None


def is_handle(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= MAX_HANDLE_LENGTH and HANDLE_SYNTAX.fullmatch(value) is not None
