"""A small history with hand-checked analytics, stored through the store's own ingest and ledger paths.

Two people (alice, bob) and two agents (scout, sage) on 2025-10-09 and 2025-10-10, UTC:

    08:00:00     alice  a1  "Agents and memory: what persists between sessions?"           thread a1
    08:00:02.5   scout  s1  reply to a1                                                      latency 2.5 s
    08:00:04     sage   g1  reply to a1                                                      latency 4 s
    08:01:00     bob    b1  reply to s1
    08:01:01.5   scout  s2  reply to b1                                                      latency 1.5 s
    08:01:02     scout  s2b reply to s2 (its own: no latency, no edge)                       depth 4
    09:00:00     bob    b2  "Is memory a protocol?"                                          thread b2
    09:00:10     sage   g2  reply to b2                                                      latency 10 s
    09:00:20     alice  a2  reply to g2                                                      depth 2
    next day
    10:00:00     alice  a3  "Hello again, agents!", edited at 10:05 (so g3 has no latency)   thread a3
    10:00:03     sage   g3  reply to a3                                                      depth 1
    11:00:00     alice  d1  deleted at 11:00:30: in no report

Dispatch windows: scout answered one, chose silence in one, and failed one twice ("letta 500");
sage answered one at its second call and has one never sent.
"""

from __future__ import annotations

from datetime import datetime, timezone

from blipflow.config import AgentConfig
from blipflow.control import tables
from blipflow.control.engine import ControlPlane
from blipflow.control.ledger import Ledger
from blipflow.store.history import Identity, Store
from tests.support.fed_stores import FedStores
from tests.support.frames import batch, commit_frame, uri

ALICE = "did:plc:alice000000000000000000"
BOB = "did:plc:bob00000000000000000000"
SCOUT = "did:plc:scout0000000000000000000"
SAGE = "did:plc:sage00000000000000000000"
AGENTS = [AgentConfig(name="scout", agent_id="agent-scout", did=SCOUT),
          AgentConfig(name="sage", agent_id="agent-sage", did=SAGE)]


def at(day: int, hour: int, minute: int, second: float = 0.0) -> int:
    """µs since the epoch of 2025-10-`day` hour:minute:second UTC."""
    whole = datetime(2025, 10, day, hour, minute, int(second), tzinfo=timezone.utc)
    return int(whole.timestamp()) * 1_000_000 + round((second - int(second)) * 1_000_000)


# rkey → (author, created at, content, parent rkey or None)
BLIPS: dict[str, tuple[str, int, str, str | None]] = {
    "a1": (ALICE, at(9, 8, 0), "Agents and memory: what persists between sessions?", None),
    "s1": (SCOUT, at(9, 8, 0, 2.5), "Memory persists in archival blocks.", "a1"),
    "g1": (SAGE, at(9, 8, 0, 4), "Agents remember through memory blocks.", "a1"),
    "b1": (BOB, at(9, 8, 1), "Blocks? Tell me more.", "s1"),
    "s2": (SCOUT, at(9, 8, 1, 1.5), "Archival memory, then core memory.", "b1"),
    "s2b": (SCOUT, at(9, 8, 1, 2), "Core memory is small.", "s2"),
    "b2": (BOB, at(9, 9, 0), "Is memory a protocol?", None),
    "g2": (SAGE, at(9, 9, 0, 10), "A protocol for memory, yes.", "b2"),
    "a2": (ALICE, at(9, 9, 0, 20), "Protocol agents agree.", "g2"),
    "a3": (ALICE, at(10, 10, 0), "Hello again, agents!", None),
    "g3": (SAGE, at(10, 10, 0, 3), "Hello Alice.", "a3"),
    "d1": (ALICE, at(10, 11, 0), "oops, wrong chat", None),
}
EDITED = ("a3", at(10, 10, 5), "Hello again, agents. Edited.")
DELETED = ("d1", at(10, 11, 0, 30))


def blip_uri(rkey: str) -> str:
    return uri(BLIPS[rkey][0], rkey)


def root_of(rkey: str) -> str:
    while BLIPS[rkey][3] is not None:
        rkey = BLIPS[rkey][3]
    return rkey


def create_frame(rkey: str) -> bytes:
    did, time_us, content, parent = BLIPS[rkey]
    reply = None
    if parent is not None:
        reply = {"root": {"uri": blip_uri(root_of(rkey)), "cid": f"cid-{root_of(rkey)}"},
                 "parent": {"uri": blip_uri(parent), "cid": f"cid-{parent}"}}
    return commit_frame(did, rkey, time_us, content=content, reply=reply, cid=f"cid-{rkey}",
                        created_at=datetime.fromtimestamp(time_us / 1e6, timezone.utc).isoformat())


def history_plane(store: Store) -> ControlPlane:
    """The control plane of the store's install: where it is by default, beside the store."""
    return FedStores.beside(store.path).plane


def build_history(store: Store) -> None:
    """The history in the store and, as ingest and dispatch leave them, its blips and windows in the
    control plane beside it."""
    stores = FedStores(store, history_plane(store))
    stores.apply(batch(*(create_frame(rkey) for rkey in BLIPS)))
    rkey, time_us, content = EDITED
    stores.apply(batch(commit_frame(ALICE, rkey, time_us, operation="update", content=content, cid="cid-a3-edited")))
    rkey, time_us = DELETED
    stores.apply(batch(commit_frame(ALICE, rkey, time_us, operation="delete")))
    store.save_identities([
        Identity(ALICE, "alice.test", "Alice", None, None),
        Identity(BOB, "bob.test", None, None, None),
        Identity(SCOUT, "scout.agents.test", "Scout", None, None),  # the agent's name wins over its handle
    ])
    record_windows(Ledger(stores.plane))
    with store.connect() as db:  # as a live ingest would have: each blip received when it was posted
        db.executemany("UPDATE blips SET ingested_at = make_timestamptz(?) WHERE uri = ?",
                       [(time_us, blip_uri(rkey)) for rkey, (_, time_us, _, _) in BLIPS.items()])


def record_windows(ledger: Ledger) -> None:
    opened: dict[str, int] = {}

    def window(agent: str, rkeys: list[str], opened_at: int) -> str:
        window_id = ledger.decide(agent, {}, [blip_uri(rkey) for rkey in rkeys])
        assert window_id is not None
        opened[window_id] = opened_at
        return window_id

    answered = window("scout", ["a1"], at(9, 8, 0, 1))
    ledger.mark_sending(answered)
    ledger.finish_window(answered, "scout", ["Memory persists in archival blocks."], 1200.0)
    silent = window("scout", ["g1"], at(9, 8, 0, 30))
    ledger.mark_sending(silent)
    ledger.finish_window(silent, "scout", [], 800.0)
    failing = window("scout", ["b2"], at(9, 9, 0, 5))
    for _ in range(2):
        ledger.mark_sending(failing)
        ledger.fail_window(failing, "letta 500", settled=True)
    retried = window("sage", ["b2"], at(9, 8, 0, 2))
    ledger.mark_sending(retried)
    ledger.fail_window(retried, "timed out", settled=False)
    ledger.mark_sending(retried)
    ledger.finish_window(retried, "sage", ["A protocol for memory, yes."], 3000.0)
    window("sage", ["a3"], at(10, 10, 0, 1))
    with ledger.plane.writing() as session:
        for window_id, time_us in opened.items():
            session.get(tables.Window, window_id).created_at = datetime.fromtimestamp(time_us / 1e6, timezone.utc)
