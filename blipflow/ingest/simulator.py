"""Synthetic but realistic Jetstream v1 traffic, seeded and deterministic, for benchmarks and tests.

Mostly blip creates of varied length, some of them replies, with the occasional update, delete,
identity and account event, from a fixed population of DIDs, in `time_us` order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

from blipflow.model.tids import tid
from blipflow.model.times import iso_time

B32 = "abcdefghijklmnopqrstuvwxyz234567"
WORDS = (
    "agent memory context network protocol record stream thought blip reply thread model letta "
    "atproto jetstream signal pattern emergent conversation research analysis observe hypothesis "
    "data latency cursor identity handle relay firehose the a of and to in is that it for on with"
).split()


def random_id(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(B32) for _ in range(length))


def simulate_events(count: int, *, seed: int = 7, authors: int = 500, start_us: int = 1_760_000_000_000_000) -> Iterator[dict]:
    """`count` v1 events as dicts, deterministic for a seed."""
    rng = random.Random(seed)
    dids = [f"did:plc:{random_id(rng, 24)}" for _ in range(authors)]
    created: list[tuple[str, str, str]] = []  # (did, rkey, cid) of blips that exist
    time_us = start_us
    for _ in range(count):
        time_us += rng.randint(50, 3_000)
        did = rng.choice(dids)
        roll = rng.random()
        if roll < 0.01:
            yield {"did": did, "time_us": time_us, "kind": "identity",
                   "identity": {"did": did, "handle": f"{random_id(rng, 8)}.bsky.social", "seq": time_us, "time": iso_time(time_us)}}
            continue
        if roll < 0.015:
            yield {"did": did, "time_us": time_us, "kind": "account",
                   "account": {"active": True, "did": did, "seq": time_us, "time": iso_time(time_us)}}
            continue
        if roll < 0.02 and created:
            author, rkey, _ = created.pop(rng.randrange(len(created)))
            yield commit_event(author, time_us, "delete", rkey, None, None)
            continue
        record = {"$type": "stream.thought.blip", "content": sentence(rng), "createdAt": iso_time(time_us)}
        if created and rng.random() < 0.3:
            parent = rng.choice(created)
            parent_uri = f"at://{parent[0]}/stream.thought.blip/{parent[1]}"
            record["reply"] = {"root": {"uri": parent_uri, "cid": parent[2]}, "parent": {"uri": parent_uri, "cid": parent[2]}}
        cid = "bafyrei" + random_id(rng, 52)
        if roll < 0.03 and created:
            author, rkey, _ = rng.choice(created)
            yield commit_event(author, time_us, "update", rkey, record, cid)
            continue
        rkey = tid(time_us, rng.randrange(1024))
        created.append((did, rkey, cid))
        if len(created) > 5_000:
            created.pop(0)
        yield commit_event(did, time_us, "create", rkey, record, cid)


def commit_event(did: str, time_us: int, operation: str, rkey: str, record: dict | None, cid: str | None) -> dict:
    commit: dict = {"rev": tid(time_us, 0), "operation": operation, "collection": "stream.thought.blip", "rkey": rkey}
    if record is not None:
        commit["record"] = record
        commit["cid"] = cid
    return {"did": did, "time_us": time_us, "kind": "commit", "commit": commit}


def sentence(rng: random.Random) -> str:
    length = min(int(rng.expovariate(1 / 40)) + 3, 300)
    return " ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + "."


def simulate_frames(count: int, **options: int) -> list[bytes]:
    return [orjson.dumps(event) for event in simulate_events(count, **options)]
