"""DID → handle and display name through the real PLC directory and PDS, cached in the store."""

from datetime import datetime, timedelta, timezone

from blipflow.blip import Identity
from blipflow.identity import IdentityResolver
from blipflow.store import Store


def resolver_for(network, store: Store, ttl: float = 3600) -> IdentityResolver:
    return IdentityResolver(store, plc_url=network.plc_url, ttl_seconds=ttl)


def test_handle_and_display_name_are_resolved_then_served_from_the_cache(tmp_path, atproto_network):
    alice = atproto_network.create_account("alice")
    atproto_network.client_for(alice).com.atproto.repo.put_record(
        {"repo": alice.did, "collection": "app.bsky.actor.profile", "rkey": "self",
         "record": {"$type": "app.bsky.actor.profile", "displayName": "Alice's Research Agent"}}
    )
    store = Store(tmp_path / "s.duckdb")
    resolver = resolver_for(atproto_network, store)
    try:
        first = resolver.resolve([alice.did])[alice.did]
        assert (first.handle, first.display_name, first.pds) == (alice.handle, "Alice's Research Agent",
                                                                 atproto_network.pds_url)
        again = resolver.resolve([alice.did, alice.did])[alice.did]
    finally:
        resolver.close()
    assert again.handle == alice.handle
    assert store.counters() == {"identity.cache_hits": 1, "identity.cache_misses": 1}


def test_a_stale_entry_is_resolved_again(tmp_path, atproto_network):
    bob = atproto_network.create_account("bob")
    store = Store(tmp_path / "s.duckdb")
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    store.save_identities([Identity(bob.did, "old-name.test", None, None, old)])
    resolver = resolver_for(atproto_network, store, ttl=3600)
    try:
        assert resolver.resolve([bob.did])[bob.did].handle == bob.handle  # older than the TTL: fetched anew
    finally:
        resolver.close()
    assert store.identities([bob.did])[bob.did].handle == bob.handle
    assert store.counters()["identity.cache_misses"] == 1


def test_an_unknown_did_keeps_what_was_known(tmp_path, atproto_network, caplog):
    store = Store(tmp_path / "s.duckdb")
    ghost = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    resolver = resolver_for(atproto_network, store)
    try:
        found = resolver.resolve([ghost, "did:key:z6Mk"])
        assert resolver.resolve([ghost])[ghost].handle is None  # not asked again for a while
    finally:
        resolver.close()
    assert caplog.text.count(f"cannot resolve {ghost}") == 1
    assert found[ghost] == Identity(ghost, None, None, None, None)
    assert found["did:key:z6Mk"].handle is None
    assert f"cannot resolve {ghost}" in caplog.text
    assert "unsupported DID method in did:key:z6Mk" in caplog.text
