"""The control plane's identity cache on SQLite and a real PostgreSQL: what resolved is kept and replaced,
read back as it was stored (times in UTC), and the expired come oldest first."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from blipflow.control.engine import ControlPlane
from blipflow.control.identities import Identities
from blipflow.model.blip import Identity

NOW = datetime(2026, 12, 6, 12, tzinfo=timezone.utc)


def test_resolved_identities_are_kept_replaced_and_read_back(control: ControlPlane) -> None:
    identities = Identities(control)
    alice = Identity("did:plc:alice", "alice.test", "Alice", "http://127.0.0.1:1", NOW)
    identities.save_identities([alice, Identity("did:plc:bob", "bob.test", None, None, NOW)])
    assert identities.identities(["did:plc:alice", "did:plc:nobody"]) == {"did:plc:alice": alice}

    renamed = Identity("did:plc:alice", "alice-anew.test", None, "http://127.0.0.1:2", NOW + timedelta(hours=1))
    identities.save_identities([renamed])
    assert identities.identities(["did:plc:alice", "did:plc:bob"]) == {
        "did:plc:alice": renamed, "did:plc:bob": Identity("did:plc:bob", "bob.test", None, None, NOW)}
    assert identities.identities([]) == {}


def test_the_expired_come_oldest_first(control: ControlPlane) -> None:
    identities = Identities(control)
    identities.save_identities([Identity("did:plc:old", None, None, None, NOW - timedelta(hours=3)),
                                Identity("did:plc:older", None, None, None, NOW - timedelta(hours=5)),
                                Identity("did:plc:fresh", None, None, None, NOW)])
    assert identities.expired_identities(NOW - timedelta(hours=1), 10) == ["did:plc:older", "did:plc:old"]
    assert identities.expired_identities(NOW - timedelta(hours=1), 1) == ["did:plc:older"]
    assert identities.expired_identities(NOW - timedelta(hours=6), 10) == []
