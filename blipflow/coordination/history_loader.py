"""The recorded history a replay runs on, read from the store: its blips in time order, as facts.

A blip's time is the stream's (`time_us`): what the replay orders by and measures reply latency with.
A reply whose parent lies before `since` starts its chain anew (its parent's depth is not known here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from blipflow.coordination.facts import BlipFacts, record_facts
from blipflow.coordination.participants import Roster
from blipflow.store.history import Store
from blipflow.store.statements import CANDIDATE_BLIP, RECORD_AS_SENT

HISTORY = f"""
SELECT b.uri, b.did, b.time_us, ({RECORD_AS_SENT})::VARCHAR FROM blips b
WHERE {CANDIDATE_BLIP} AND b.time_us >= ? AND b.time_us < ?
ORDER BY b.time_us, b.uri
"""


def recorded_history(store: Store, roster: Roster, *, since_us: int = 0, until_us: int = 2**62) -> Iterator[BlipFacts]:
    depths: dict[str, int] = {}
    for uri, did, time_us, record in store.query_all(HISTORY, [since_us, until_us]):
        data = json.loads(record) if isinstance(record, str) else record
        parent = data.get("reply", {}).get("parent", {}).get("uri") if isinstance(data.get("reply"), dict) else None
        facts = record_facts(uri, did, data if isinstance(data, dict) else {}, at=time_us / 1e6, roster=roster,
                           parent_depth=depths.get(parent) if isinstance(parent, str) else None)
        depths[uri] = facts.chain_depth
        yield facts
