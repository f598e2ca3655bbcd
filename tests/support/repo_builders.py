"""Hand-built firehose messages for tests: a tiny canonical DAG-CBOR encoder, CIDs, CARs, and message bodies.

Shared by the tests of `blipflow.firehose_events` (the translation core) and of the Jetstream stand-in.

- `cbor(value)` encodes canonical DAG-CBOR; wrap a CID string in `L` to encode it as a link (tag 42).
- `cid_bytes` / `cid_of` give a block's CIDv1 (dag-cbor, sha2-256) as bytes / as its string form.
- `car(root, blocks)` builds a CARv1 file; `varint` is its length prefix, for hand-made CAR sections.
- `commit_message`, `identity_message`, `account_message` build firehose bodies as plain dicts with a
  ``$type``; `sdk_message` runs such a body through the atproto SDK's parser (what a server sees).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import libipld

DID_A = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
DID_B = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
NOW = "2026-01-01T00:00:00.000Z"
BLIP = "stream.thought.blip"


class L:
    """A CID link to encode (tag 42)."""

    def __init__(self, cid: str) -> None:
        self.cid = cid


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def cbor(value: Any) -> bytes:
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return _head(3, len(raw)) + raw
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, L):
        raw = b"\x00" + libipld.decode_multibase(value.cid)[1]
        return b"\xd8\x2a" + _head(2, len(raw)) + raw
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))  # DAG-CBOR canonical order
        return _head(5, len(keys)) + b"".join(cbor(k) + cbor(value[k]) for k in keys)
    raise TypeError(type(value))


def cid_bytes(block: bytes) -> bytes:
    return bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(block).digest()


def cid_of(block: bytes) -> str:
    return libipld.encode_cid(cid_bytes(block))


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def car(root: bytes, blocks: list[bytes]) -> bytes:
    header = cbor({"roots": [L(libipld.encode_cid(root))], "version": 1})
    out = varint(len(header)) + header
    for block in blocks:
        section = cid_bytes(block) + block
        out += varint(len(section)) + section
    return out


def commit_message(did: str, rev: str, ops: list[tuple], *, seq: int = 1, extra_blocks=(), too_big=False) -> dict:
    """A #commit body as the firehose sends it: ops = [(action, collection, rkey, record-or-None), ...]."""
    blocks, wire_ops = [], []
    for action, collection, rkey, record in ops:
        block = cbor(record) if record is not None else None
        if block is not None:
            blocks.append(block)
        wire_ops.append({"action": action, "path": f"{collection}/{rkey}", "cid": cid_bytes(block) if block else None})
    commit_block = cbor({"did": did, "rev": rev, "version": 3})
    return {
        "$type": "#commit",
        "repo": did,
        "rev": rev,
        "seq": seq,
        "time": NOW,
        "tooBig": too_big,
        "ops": wire_ops,
        "blocks": car(cid_bytes(commit_block), [commit_block, *blocks, *extra_blocks]),
    }


def sdk_message(body: dict) -> Any:
    """The same body through the SDK's parser, as the server sees it."""
    from atproto_firehose import parse_subscribe_repos_message
    from atproto_subscription.frames import MessageFrame, MessageFrameHeader

    kind = body["$type"]
    fields = {k: v for k, v in body.items() if k != "$type"}
    if kind == "#commit":
        commit_cid = cid_bytes(b"commit")
        fields = {"blobs": [], "commit": commit_cid, "rebase": False, **fields}
    return parse_subscribe_repos_message(MessageFrame(MessageFrameHeader(t=kind), fields))


def identity_message(did: str, seq: int, handle: str | None = "alice.test") -> dict:
    body = {"$type": "#identity", "did": did, "seq": seq, "time": NOW}
    if handle is not None:
        body["handle"] = handle
    return body


def account_message(did: str, seq: int, active: bool = True, status: str | None = None) -> dict:
    body = {"$type": "#account", "did": did, "seq": seq, "time": NOW, "active": active}
    if status is not None:
        body["status"] = status
    return body


def blip_record(text: str, **extra: Any) -> dict:
    return {"$type": BLIP, "content": text, "createdAt": NOW, **extra}
