"""The local ATProto network (tests/peers/atproto, tests/support/network.py) works like the real thing."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
from datetime import datetime

import pytest
from atproto import (
    CAR,
    AsyncFirehoseSubscribeReposClient,
    Client,
    IdResolver,
    models,
    parse_subscribe_repos_message,
)

from tests.support.network import (
    BLIP_COLLECTION,
    Account,
    LocalNetwork,
    client_for,
    list_records,
    now_iso,
    post_blip,
)


def test_describe_server(atproto_network: LocalNetwork) -> None:
    desc = Client(base_url=atproto_network.pds_url).com.atproto.server.describe_server()
    assert desc.did == atproto_network.pds_did == "did:web:localhost"
    assert desc.available_user_domains == [".test"]
    assert not desc.invite_code_required
    assert atproto_network.pds_url.startswith("http://127.0.0.1:")
    assert atproto_network.pds_ws_url == f"ws://127.0.0.1:{atproto_network.pds_port}"


def test_create_account_and_login(atproto_network: LocalNetwork) -> None:
    a = atproto_network.create_account("Alice_Smith")
    b = atproto_network.create_account("alice_smith")
    assert re.fullmatch(r"alice-smith-[0-9a-f]{6}\.test", a.handle)
    assert a.handle != b.handle and a.did != b.did
    assert a.did.startswith("did:plc:") and a.pds_url == atproto_network.pds_url

    client = client_for(a)
    session = client.com.atproto.server.get_session()
    assert (session.did, session.handle) == (a.did, a.handle)
    # the PDS itself resolves new DIDs through the PLC: createAccount answers with the DID document
    raw_handle = f"raw-{secrets.token_hex(4)}.test"
    raw = Client(base_url=a.pds_url).com.atproto.server.create_account(
        {"handle": raw_handle, "email": "raw@example.com", "password": "raw-password-1"}
    )
    assert raw.did_doc is not None
    assert raw.did_doc["alsoKnownAs"] == [f"at://{raw_handle}"]
    assert raw.did_doc["service"][0]["serviceEndpoint"] == atproto_network.pds_url
    # handle -> DID through the PDS
    assert client.com.atproto.identity.resolve_handle({"handle": a.handle}).did == a.did

    with pytest.raises(Exception):
        Client(base_url=a.pds_url).login(a.handle, "wrong-password", fetch_bsky_profile=False)


def test_post_blip_and_list_it(atproto_network: LocalNetwork, human_account: Account) -> None:
    assert human_account.handle.startswith("human-")
    client = client_for(human_account)
    uri, cid = post_blip(client, "hello from the test network", extra="field")
    assert uri.startswith(f"at://{human_account.did}/{BLIP_COLLECTION}/")
    uri2, _ = atproto_network.post_blip(human_account, "second blip", createdAt="2025-01-02T03:04:05.678Z")

    records = list_records(client)
    by_uri = {r.uri: r for r in records}
    assert set(by_uri) == {uri, uri2}
    first = by_uri[uri]
    assert first.cid == cid
    value = first.value.to_dict()  # an unknown lexicon comes back as a DotDict
    assert value["$type"] == BLIP_COLLECTION
    assert value["content"] == "hello from the test network"
    assert value["extra"] == "field"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value["createdAt"])
    assert by_uri[uri2].value["createdAt"] == "2025-01-02T03:04:05.678Z"
    # the public, unauthenticated read path works too
    got = Client(base_url=atproto_network.pds_url).com.atproto.repo.get_record(
        {"repo": human_account.handle, "collection": BLIP_COLLECTION, "rkey": uri.rsplit("/", 1)[1]}
    )
    assert got.cid == cid


def test_now_iso_format() -> None:
    stamp = now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_did_resolves_through_plc(atproto_network: LocalNetwork, human_account: Account) -> None:
    doc = atproto_network.resolve_did(human_account.did)
    assert doc["id"] == human_account.did
    assert f"at://{human_account.handle}" in doc["alsoKnownAs"]
    pds_services = [s for s in doc["service"] if s["id"] == "#atproto_pds"]
    assert pds_services == [
        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": atproto_network.pds_url}
    ]
    # and through the SDK's resolver pointed at the local PLC
    resolved = IdResolver(plc_url=atproto_network.plc_url).did.resolve(human_account.did)
    assert resolved is not None
    assert resolved.get_pds_endpoint() == atproto_network.pds_url
    assert resolved.get_handle() == human_account.handle


def test_firehose_delivers_blip_commits(atproto_network: LocalNetwork, human_account: Account) -> None:
    """subscribeRepos on the PDS: a replayed commit (cursor=0), then a live one posted while connected."""
    client = client_for(human_account)
    replay_uri, replay_cid = post_blip(client, "before subscribing")

    async def run() -> dict[str, tuple[str, dict]]:
        seen: dict[str, tuple[str, dict]] = {}
        replay_seen = asyncio.Event()
        live_seen = asyncio.Event()
        live: dict[str, str] = {}
        firehose = AsyncFirehoseSubscribeReposClient(
            params={"cursor": 0}, base_uri=f"{atproto_network.pds_ws_url}/xrpc", recv_timeout=30
        )

        async def on_message(frame) -> None:
            msg = parse_subscribe_repos_message(frame)
            if not isinstance(msg, models.ComAtprotoSyncSubscribeRepos.Commit) or msg.repo != human_account.did:
                return
            car = CAR.from_bytes(msg.blocks)
            for op in msg.ops:
                if op.action == "create" and op.path.startswith(f"{BLIP_COLLECTION}/"):
                    uri = f"at://{msg.repo}/{op.path}"
                    seen[uri] = (str(op.cid), car.blocks.get(op.cid))
            if replay_uri in seen:
                replay_seen.set()
            if live.get("uri") in seen:
                live_seen.set()

        task = asyncio.create_task(firehose.start(on_message))
        try:
            await asyncio.wait_for(replay_seen.wait(), 20)
            # connected now: a blip posted from here arrives live
            live["uri"], live["cid"] = await asyncio.to_thread(post_blip, client, "while subscribed")
            await asyncio.wait_for(live_seen.wait(), 20)
        finally:
            await firehose.stop()
            await asyncio.wait_for(task, 10)
        seen["live"] = (live["uri"], {})
        return seen

    seen = asyncio.run(run())
    live_uri = seen.pop("live")[0]
    cid, record = seen[replay_uri]
    assert cid == replay_cid
    assert record["$type"] == BLIP_COLLECTION and record["content"] == "before subscribing"
    assert seen[live_uri][1]["content"] == "while subscribed"


def test_servers_listen_on_loopback_only(atproto_network: LocalNetwork) -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) not installed")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    pids = atproto_network.pids()
    assert len(pids) == 2
    local_addrs = []
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            local_addrs.append(line.split()[3])
    assert sorted(local_addrs) == sorted(
        f"127.0.0.1:{port}" for port in (atproto_network.pds_port, int(atproto_network.plc_url.rsplit(":", 1)[1]))
    )


def test_pds_restart_keeps_data(atproto_network: LocalNetwork) -> None:
    """Runs last among the network tests: stops the session's PDS and brings it back."""
    account = atproto_network.create_account("restart")
    client = client_for(account)
    uri, cid = post_blip(client, "before the restart")
    port, old_pid, plc_pid = atproto_network.pds_port, atproto_network.pds_pid, atproto_network.plc_pid

    assert atproto_network.stop_pds() == 0  # clean shutdown on SIGTERM
    assert not atproto_network.pds_running()
    with pytest.raises(Exception):
        post_blip(client, "while the PDS is down")

    atproto_network.start_pds()
    atproto_network.wait_pds_healthy()
    assert atproto_network.pds_port == port and atproto_network.pds_pid != old_pid
    assert atproto_network.plc_pid == plc_pid

    # the old session still works (same JWT secret), the records and the account are still there
    assert [(r.uri, r.cid) for r in list_records(client)] == [(uri, cid)]
    uri2, _ = post_blip(client, "after the restart")
    fresh = client_for(account)
    assert {r.uri for r in list_records(fresh)} == {uri, uri2}
    assert atproto_network.resolve_did(account.did)["service"][0]["serviceEndpoint"] == atproto_network.pds_url
