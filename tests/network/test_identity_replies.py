"""No poison identities: whatever a PLC directory or a PDS answers — not JSON, the wrong shape, odd types,
names that are not names, display names with line breaks, controls, lone surrogates or ten thousand
characters — resolution never raises, what it stores is clean, and a DID whose answer is unusable stays as
it was known, with one line naming it. Generated replies come from a loopback server (the fast tier); the
real PLC and PDS are in test_identity.py."""

from __future__ import annotations

import itertools
import json
import logging
import unicodedata
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blipflow.model.blip import Identity
from blipflow.model.identifiers import is_did, is_handle
from blipflow.network.accounts import Account, AccountFailed, learn_did
from blipflow.network.identity import MAX_DISPLAY_NAME, IdentityResolver
from blipflow.store.history import Store
from tests.support.canned_replies import CannedReplies

PROFILE_PATH = "/xrpc/com.atproto.repo.getRecord"
RESOLVE_HANDLE_PATH = "/xrpc/com.atproto.identity.resolveHandle"
LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)
numbers = itertools.count()

odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=False),
    st.text(max_size=12), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just(json.loads("[" * 900 + "]" * 900)),  # as deep as a JSON parser takes
)
# Any code point, lone surrogates included (hypothesis leaves those out unless asked).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
hostile_texts = st.one_of(any_text, st.sampled_from([
    "Mallory\nauthor: alice.test\ndid: did:plc:alice", "\ud800", "a\udfffb", "\x1b[2J\x00", "\u202eevil", "\u2028x",
    " \t\r\n ", "x" * 10_000, "é" * 65, "\U0001f600" * 70,
]))
labels = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)
handles = st.builds(lambda parts: ".".join(parts) + ".test", st.lists(labels, min_size=1, max_size=3))


def endpoints(pds_url: str) -> st.SearchStrategy:
    """Service endpoints: the loopback PDS, or values that are no http(s) URL of any other host (the test
    must not address one): `://` never appears in generated text."""
    return st.one_of(
        st.just(pds_url), st.just(pds_url + "/"), odd_values,
        any_text.filter(lambda text: "://" not in text),
        st.sampled_from(["file:///etc/passwd", "ftp://127.0.0.1/", "http://127.0.0.1:99999", "http://[::1",
                         "http:///x", pds_url + "/ x", pds_url + "\n", pds_url + "?a=b", "ws://127.0.0.1:1"]),
    )


def did_documents(did: str, pds_url: str) -> st.SearchStrategy:
    alias = st.one_of(handles.map(lambda h: f"at://{h}"), any_text.map(lambda t: f"at://{t}"), odd_values,
                      st.just("at://" + "a" * 300 + ".test"), st.just("https://example.test"))
    service = st.one_of(odd_values, st.fixed_dictionaries(
        {}, optional={"id": st.one_of(st.just("#atproto_pds"), st.just(f"{did}#atproto_pds"), odd_values),
                      "type": st.just("AtprotoPersonalDataServer"), "serviceEndpoint": endpoints(pds_url)}))
    return st.fixed_dictionaries({}, optional={
        "id": st.one_of(st.just(did), st.just(did), odd_values),
        "alsoKnownAs": st.one_of(st.lists(alias, max_size=3), odd_values),
        "service": st.one_of(st.lists(service, max_size=3), odd_values),
    })


profiles = st.one_of(odd_values, st.fixed_dictionaries({}, optional={
    "uri": st.text(max_size=10),
    "value": st.one_of(odd_values, st.fixed_dictionaries({}, optional={"displayName": st.one_of(hostile_texts,
                                                                                                  odd_values)})),
}))


def replies(values: st.SearchStrategy) -> st.SearchStrategy:
    """A reply's status and body: the value as JSON (lone surrogates escaped, as a PDS may send them), or
    bytes that may be anything."""
    return st.one_of(
        st.tuples(st.sampled_from([200, 200, 200, 404, 500]), values.map(lambda v: json.dumps(v).encode())),
        st.tuples(st.just(200), st.one_of(st.binary(max_size=40), st.just(b"[" * 100_000), st.just(b" " * 300_000))),
    )


def assert_clean(identity: Identity) -> None:
    assert identity.handle is None or is_handle(identity.handle)
    assert identity.pds is None or identity.pds.isascii() and identity.pds.isprintable()
    name = identity.display_name
    if name is not None:
        assert 0 < len(name) <= MAX_DISPLAY_NAME and name == name.strip()
        assert " ".join(name.split()) == name  # one line, single spaces
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in name)


@pytest.fixture
def server():
    with CannedReplies() as running:
        yield running


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "s.duckdb")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_whatever_the_plc_and_pds_answer_resolution_never_raises_and_stores_only_clean_identities(
        data, server, store, caplog):
    did = f"did:plc:{next(numbers):024d}"
    known = Identity(did, "known.test", "Known", None, LONG_AGO)
    store.save_identities([known])
    server.answer(f"/{did}", *data.draw(replies(did_documents(did, server.url)), "DID document"))
    server.answer(PROFILE_PATH, *data.draw(replies(profiles), "profile"))
    resolver = IdentityResolver(store, plc_url=server.url, ttl_seconds=60)
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="blipflow"):
            resolved = resolver.resolve([did])[did]
    finally:
        resolver.close()

    stored = store.identities([did])[did]
    assert stored == resolved
    assert_clean(stored)
    lines = [record.getMessage() for record in caplog.records]
    assert all("\n" not in line and len(line) < 1000 for line in lines)
    if resolved.fetched_at == LONG_AGO:  # unusable: kept as known, said once
        assert resolved == known
        assert [line for line in lines if line.startswith(f"cannot resolve {did}: ")] == lines and len(lines) == 1
    else:
        assert resolved.fetched_at > datetime.now(timezone.utc) - timedelta(minutes=1)


def test_a_well_formed_answer_resolves_and_its_display_name_is_one_short_line(server, store):
    did = "did:plc:" + "a" * 24
    server.answer(f"/{did}", 200, json.dumps({
        "id": did, "alsoKnownAs": [5, "https://x.test", "at://mallory.test"],
        "service": ["x", {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": server.url}],
    }).encode())
    server.answer(PROFILE_PATH, 200, json.dumps(
        {"value": {"displayName": "Mallory\u202e\n\nauthor: alice.test\x00\ud800 " + "x" * 10_000}}).encode())
    resolver = IdentityResolver(store, plc_url=server.url, ttl_seconds=60)
    try:
        resolved = resolver.resolve([did])[did]
    finally:
        resolver.close()
    assert (resolved.handle, resolved.pds) == ("mallory.test", server.url)
    assert resolved.display_name == "Mallory author: alice.test " + "x" * (MAX_DISPLAY_NAME - 28) + "…"
    assert store.identities([did])[did] == resolved


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=replies(st.one_of(odd_values, st.fixed_dictionaries({}, optional={
    "did": st.one_of(st.just("did:plc:" + "b" * 24), hostile_texts, odd_values),
    "error": st.one_of(st.sampled_from(["InvalidRequest", "ExpiredToken"]), hostile_texts, odd_values),
    "message": hostile_texts}))), status=st.sampled_from([None, 400, 401, 500, 502]))
def test_whatever_a_pds_answers_to_resolve_handle_an_agent_gets_a_did_or_one_line(reply, status, server):
    answered_status, body = reply
    server.answer(RESOLVE_HANDLE_PATH, status or answered_status, body)
    account = Account("scout", "scout.test", None, server.url)
    try:
        did = learn_did(account, timeout=5)
    except AccountFailed as failure:
        assert str(failure).startswith("account scout (scout.test): ")
        assert "\n" not in str(failure) and len(str(failure)) < 1000
        assert failure.error is None or failure.error.isalnum()
    else:
        assert is_did(did)
