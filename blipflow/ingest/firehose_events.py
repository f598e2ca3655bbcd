"""Firehose messages as Jetstream v1 events: the translation Jetstream performs, done the same way here.

Used by the firehose source (networks without Jetstream) and by the test suite's Jetstream stand-in,
so both see exactly what a real Jetstream would send. It follows the v1 server (bluesky-social/jetstream,
pkg/consumer) and, for record JSON, indigo's atproto/data package that Jetstream marshals records with:
CID links as ``{"$link": ...}``, bytes as ``{"$bytes": <unpadded base64>}``, blobs as
``{"$type": "blob", "ref", "mimeType", "size"}``, map keys in the order Go marshals maps. Like Jetstream,
an operation it cannot decode is logged and skipped, never fatal.

Long because it is one translation, kept whole and in the order of Jetstream's own code, so that the two
can be read side by side when Jetstream changes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
import struct
from collections.abc import Mapping
from typing import Any

import libipld

log = logging.getLogger(__name__)

# Limits from indigo atproto/data/const.go, applied the way data.UnmarshalCBOR / parseAtom apply them.
MAX_CBOR_RECORD_SIZE = 1024 * 1024
MAX_RECORD_STRING_LEN = MAX_CBOR_RECORD_SIZE
MAX_CBOR_CONTAINER_LEN = 128 * 1024
MAX_OBJECT_KEY_LEN = 8192

class RecordDecodeError(ValueError):
    """A record block that Jetstream would fail to decode (it then skips that op)."""


class Link(str):
    """A decoded CID link (DAG-CBOR tag 42), as its string form."""


class _Blob:
    __slots__ = ("mime_type", "ref", "size")

    def __init__(self, ref: str, mime_type: str, size: int) -> None:
        self.ref = ref
        self.mime_type = mime_type
        self.size = size


class _CborReader:
    """A strict DAG-CBOR reader that keeps CID links (tag 42) apart from byte strings.

    libipld (behind the SDK's `CAR.from_bytes`) returns both as `bytes`, which would make `$link` and
    `$bytes` indistinguishable, so record blocks are decoded here.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RecordDecodeError("truncated CBOR")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _argument(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            return self._take(1)[0]
        if info == 25:
            return int.from_bytes(self._take(2), "big")
        if info == 26:
            return int.from_bytes(self._take(4), "big")
        if info == 27:
            return int.from_bytes(self._take(8), "big")
        raise RecordDecodeError("indefinite-length or reserved CBOR item is not DAG-CBOR")

    def read(self, depth: int = 0) -> Any:
        if depth > 64:
            raise RecordDecodeError("CBOR nested too deeply")
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info == 22:
                return None
            if info == 25:
                raise RecordDecodeError("half-precision floats are not DAG-CBOR")
            if info == 26:
                return struct.unpack(">f", self._take(4))[0]
            if info == 27:
                return struct.unpack(">d", self._take(8))[0]
            raise RecordDecodeError(f"unsupported CBOR simple value {info}")
        arg = self._argument(info)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return bytes(self._take(arg))
        if major == 3:
            # Go's JSON encoder replaces invalid UTF-8 with U+FFFD rather than failing.
            return self._take(arg).decode("utf-8", errors="replace")
        if major == 4:
            if arg > MAX_CBOR_CONTAINER_LEN:
                raise RecordDecodeError(f"data array length too long: {arg}")
            return [self.read(depth + 1) for _ in range(arg)]
        if major == 5:
            if arg > MAX_CBOR_CONTAINER_LEN:
                raise RecordDecodeError(f"data object has too many fields: {arg}")
            out: dict[str, Any] = {}
            for _ in range(arg):
                key = self.read(depth + 1)
                if not isinstance(key, str) or isinstance(key, Link):
                    raise RecordDecodeError("DAG-CBOR map keys must be strings")
                if key in out:
                    raise RecordDecodeError(f"duplicate map key {key!r}")
                out[key] = self.read(depth + 1)
            return out
        if major == 6:
            if arg != 42:
                raise RecordDecodeError(f"unsupported CBOR tag {arg}")
            raw = self.read(depth + 1)
            if not isinstance(raw, bytes) or not raw or raw[0] != 0:
                raise RecordDecodeError("CID link (tag 42) must be bytes with a 0x00 prefix")
            try:
                return Link(libipld.encode_cid(raw[1:]))
            except ValueError as error:
                raise RecordDecodeError(f"invalid CID link: {error}") from None
        raise RecordDecodeError(f"unsupported CBOR major type {major}")


def _go_type(value: Any) -> str:
    """The Go type a generic CBOR decode would give `value` (for indigo's homogenous-array rule)."""
    if isinstance(value, Link):
        return "cid"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list):
        return "array"
    return "map"


def _parse_link_string(value: Any) -> Link:
    if not isinstance(value, str):
        raise RecordDecodeError("$link field missing or not a string")
    try:
        return Link(libipld.encode_cid(value if not isinstance(value, Link) else str(value)))
    except ValueError as error:
        raise RecordDecodeError(f"invalid $link CID: {error}") from None


def _parse_atom(value: Any) -> Any:
    # Mirrors indigo atproto/data parseAtom: integral floats become ints, other floats are rejected.
    if isinstance(value, float):
        if not math.isfinite(value) or value != float(int(value)):
            raise RecordDecodeError(f"number is not a safe integer: {value}")
        return int(value)
    if isinstance(value, str) and not isinstance(value, Link):
        if len(value) > MAX_RECORD_STRING_LEN:
            raise RecordDecodeError(f"string too long: {len(value)}")
        return value
    if isinstance(value, list):
        last = None
        out = []
        for item in value:
            kind = None if item is None else _go_type(item)
            if last is not None and kind is not None and kind != last:
                raise RecordDecodeError(f"non-homogenous array types: {last} != {kind}")
            last = kind
            out.append(_parse_atom(item))
        return out
    if isinstance(value, dict):
        return _parse_map(value)
    return value


def _parse_map(obj: dict[str, Any]) -> Any:
    if "$link" in obj:
        if len(obj) != 1:
            raise RecordDecodeError("$link objects must have a single field")
        return _parse_link_string(obj["$link"])
    if "$bytes" in obj:
        if len(obj) != 1:
            raise RecordDecodeError("$bytes objects must have a single field")
        encoded = obj["$bytes"]
        if not isinstance(encoded, str):
            raise RecordDecodeError("$bytes field missing or not a string")
        try:
            return _raw_std_b64decode(encoded)
        except ValueError as error:
            raise RecordDecodeError(f"decoding $byte value: {error}") from None
    if "$type" in obj:
        type_value = obj["$type"]
        if not isinstance(type_value, str) or not type_value:
            raise RecordDecodeError("$type field must contain a non-empty string")
        if type_value == "blob":
            return _parse_blob(obj)
    out = {}
    for key, item in obj.items():
        if len(key.encode("utf-8")) > MAX_OBJECT_KEY_LEN:
            raise RecordDecodeError(f"data object key too long: {len(key)}")
        out[key] = _parse_atom(item)
    return out


def _parse_blob(obj: dict[str, Any]) -> _Blob:
    if len(obj) != 4:
        raise RecordDecodeError("blobs expected to have 4 fields")
    size = obj.get("size")
    if isinstance(size, float):
        size = _parse_atom(size)
    if isinstance(size, bool) or not isinstance(size, int):
        raise RecordDecodeError("blob 'size' missing or not a number")
    mime_type = obj.get("mimeType")
    if not isinstance(mime_type, str) or isinstance(mime_type, Link):
        raise RecordDecodeError("blob 'mimeType' missing or not a string")
    if "ref" not in obj:
        raise RecordDecodeError("blob 'ref' missing")
    ref = obj["ref"]
    if isinstance(ref, Link):
        pass
    elif isinstance(ref, dict):
        if "$link" not in ref or len(ref) != 1:
            raise RecordDecodeError("$link objects must have a single field")
        ref = _parse_link_string(ref["$link"])
    else:
        raise RecordDecodeError("blob 'ref' unexpected type")
    return _Blob(ref=str(ref), mime_type=mime_type, size=size)


def _raw_std_b64decode(text: str) -> bytes:
    # Go's base64.RawStdEncoding: standard alphabet, no padding allowed.
    if "=" in text or not re.fullmatch(r"[A-Za-z0-9+/]*", text) or len(text) % 4 == 1:
        raise ValueError("illegal base64 data")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _to_json_model(value: Any) -> Any:
    """Parsed atoms to JSON-ready values, in the byte order Go's encoding/json produces."""
    if isinstance(value, Link):
        return {"$link": str(value)}
    if isinstance(value, _Blob):
        return {"$type": "blob", "ref": {"$link": value.ref}, "mimeType": value.mime_type, "size": value.size}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii").rstrip("=")}
    if isinstance(value, dict):
        # Go marshals map[string]any with keys sorted bytewise; code point order is the same order.
        return {key: _to_json_model(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_to_json_model(item) for item in value]
    return value


def decode_record(block: bytes) -> dict[str, Any]:
    """One record block (DAG-CBOR) as Jetstream puts it in ``commit.record``.

    Raises RecordDecodeError where indigo's data.UnmarshalCBOR would fail (Jetstream then skips the op).
    """
    if len(block) > MAX_CBOR_RECORD_SIZE:
        raise RecordDecodeError(f"exceeded max CBOR record size: {len(block)}")
    reader = _CborReader(block)
    raw = reader.read()
    if reader.pos != len(block):
        raise RecordDecodeError("trailing bytes after CBOR record")
    if not isinstance(raw, dict):
        raise RecordDecodeError("top-level datum was not an object")
    parsed = _parse_map(raw)
    if not isinstance(parsed, dict):
        raise RecordDecodeError("top-level datum was not an object")
    return _to_json_model(parsed)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def read_car_blocks(car: bytes) -> dict[str, bytes]:
    """The raw blocks of a CARv1 file, by CID string.

    The SDK's `CAR.from_bytes` hands back blocks already decoded by libipld, which loses the difference
    between CID links and byte strings, so the raw bytes are read here.
    """
    header_len, pos = _read_varint(car, 0)
    pos += header_len
    if pos > len(car):
        raise ValueError("truncated CAR header")
    blocks: dict[str, bytes] = {}
    while pos < len(car):
        section_len, pos = _read_varint(car, pos)
        end = pos + section_len
        if end > len(car):
            raise ValueError("truncated CAR block")
        start = pos
        if car[pos] == 0x12 and pos + 1 < end and car[pos + 1] == 0x20:  # CIDv0: a bare sha2-256 multihash
            cid_end = pos + 34
        else:
            _, cursor = _read_varint(car, pos)  # version
            _, cursor = _read_varint(car, cursor)  # codec
            _, cursor = _read_varint(car, cursor)  # multihash code
            digest_len, cursor = _read_varint(car, cursor)
            cid_end = cursor + digest_len
        if cid_end > end:
            raise ValueError("CID runs past its CAR section")
        blocks[libipld.encode_cid(bytes(car[start:cid_end]))] = bytes(car[cid_end:end])
        pos = end
    return blocks


def block_matches_cid(cid: str, block: bytes) -> bool:
    """Whether `block` hashes to `cid` (sha2-256 only; other hash functions are taken on trust)."""
    decoded = libipld.decode_cid(cid)
    if decoded["hash"]["code"] != 0x12:
        return True
    return hashlib.sha256(block).digest() == decoded["hash"]["digest"]


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _valid_time(value: Any) -> bool:
    # Jetstream drops events whose `time` does not parse as RFC 3339.
    return isinstance(value, str) and bool(_RFC3339.match(value))


def _get(message: Any, name: str, default: Any = None) -> Any:
    if isinstance(message, Mapping):
        return message.get(name, default)
    return getattr(message, name, default)


def _message_type(message: Any) -> str:
    """'#commit', '#identity', ... for an SDK model (its py_type) or a plain dict with '$type'."""
    py_type = _get(message, "py_type") or _get(message, "$type") or ""
    return "#" + py_type.rsplit("#", 1)[-1] if "#" in py_type else py_type


def translate_commit(commit: Any) -> list[dict[str, Any]]:
    """A ``#commit`` message as v1 commit events (one per op), as pkg/consumer HandleRepoCommit does."""
    repo = _get(commit, "repo")
    if _get(commit, "too_big", False) or _get(commit, "tooBig", False):
        log.warning("repo commit too big: repo=%s seq=%s", repo, _get(commit, "seq"))
        return []
    if not _valid_time(_get(commit, "time")):
        log.error("error parsing time of commit repo=%s seq=%s", repo, _get(commit, "seq"))
        return []
    ops = _get(commit, "ops") or []
    blocks_raw = _get(commit, "blocks") or b""
    blocks: dict[str, bytes] | None = None
    if ops:
        try:
            blocks = read_car_blocks(bytes(blocks_raw))
        except (ValueError, IndexError) as error:
            log.error("failed to read repo from car: repo=%s error=%s", repo, error)
            return []
    rev = _get(commit, "rev") or ""
    events: list[dict[str, Any]] = []
    for op in ops:
        path = _get(op, "path") or ""
        parts = path.split("/")
        if len(parts) < 2:
            log.error("op path without a record key: %r", path)
            continue
        collection, rkey = parts[0], parts[1]
        action = _get(op, "action")
        body: dict[str, Any] = {}
        if rev:
            body["rev"] = rev
        if action in ("create", "update"):
            op_cid = _get(op, "cid")
            if op_cid is None:
                log.error("%s record op missing cid: %s", action, path)
                continue
            cid = _cid_string(op_cid)
            block = blocks.get(cid) if blocks is not None else None
            if block is None:
                log.error("failed to get record bytes: %s (block %s not in CAR)", path, cid)
                continue
            if not block_matches_cid(cid, block):
                log.error("record cid mismatch: %s", path)
                continue
            try:
                record = decode_record(block)
            except RecordDecodeError as error:
                log.error("failed to unmarshal record %s: %s", path, error)
                continue
            body.update(operation=action, collection=collection, rkey=rkey, record=record, cid=cid)
        elif action == "delete":
            body.update(operation="delete", collection=collection, rkey=rkey)
        else:
            log.warning("unknown event kind from op action: %r", action)
            continue
        # omitempty on every commit field
        body = {key: value for key, value in body.items() if value not in ("", None)}
        events.append({"did": repo, "kind": "commit", "commit": body})
    return events


def _cid_string(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return libipld.encode_cid(bytes(value))
    if hasattr(value, "encode") and not isinstance(value, str):
        return value.encode()
    return str(value)


def translate_identity(identity: Any) -> list[dict[str, Any]]:
    if not _valid_time(_get(identity, "time")):
        log.error("error parsing time of identity event did=%s", _get(identity, "did"))
        return []
    body: dict[str, Any] = {"did": _get(identity, "did")}
    handle = _get(identity, "handle")
    if handle is not None:
        body["handle"] = handle
    body["seq"] = _get(identity, "seq")
    body["time"] = _get(identity, "time")
    return [{"did": body["did"], "kind": "identity", "identity": body}]


def translate_account(account: Any) -> list[dict[str, Any]]:
    if not _valid_time(_get(account, "time")):
        log.error("error parsing time of account event did=%s", _get(account, "did"))
        return []
    body: dict[str, Any] = {"active": bool(_get(account, "active")), "did": _get(account, "did")}
    body["seq"] = _get(account, "seq")
    status = _get(account, "status")
    if status is not None:
        body["status"] = status
    body["time"] = _get(account, "time")
    return [{"did": body["did"], "kind": "account", "account": body}]


def translate_message(message: Any) -> list[dict[str, Any]]:
    """One parsed firehose message as Jetstream v1 event dicts (no ``time_us`` yet).

    `message` is what `parse_subscribe_repos_message` returns (or a dict with the same field names and a
    '$type'). ``#sync``, ``#info`` and anything else produce no events, as in Jetstream v1.
    """
    kind = _message_type(message)
    if kind == "#commit":
        return translate_commit(message)
    if kind == "#identity":
        return translate_identity(message)
    if kind == "#account":
        return translate_account(message)
    return []
