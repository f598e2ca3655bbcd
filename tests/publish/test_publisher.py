"""Publishing replies from the outbox on the real local PDS: threaded records of the agent's account,
parts of long replies, exactly once when answers are lost, refused passwords, the per-account rate,
DIDs learned from handles, and Prefect retrying transient failures only."""

from __future__ import annotations

import logging
import threading
from itertools import count

import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import select

from blipflow.config import AgentConfig, Settings
from blipflow.control import tables
from blipflow.control.blips import Blips
from blipflow.control.engine import ControlPlane
from blipflow.control.facts import facts_of
from blipflow.control.ledger import Ledger
from blipflow.control.outbox import Outbox
from blipflow.network.accounts import AccountFailed, learn_did, with_learned_dids
from blipflow.network.accounts import agent_account as account_of
from blipflow.publish.publisher import Publisher, ReplyRejected
from blipflow.publish.records import record_key
from flows.publish import publish as publish_flow
from tasks.publish import publish_reply
from tests.support.agent_accounts import AgentAccount, agent_account
from tests.support.frames import T0
from tests.support.network import list_records
from tests.support.pds_proxy import PdsProxy

clock = count(1)


@pytest.fixture(scope="module")
def scout(atproto_network) -> AgentAccount:
    return agent_account(atproto_network, "scout")


@pytest.fixture
def proxy(atproto_network):
    front = PdsProxy(atproto_network.pds_url).start()
    try:
        yield front
    finally:
        front.stop()


def control_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'control.sqlite'}"


def publisher_for(tmp_path, network, *agents: dict, **publish) -> Publisher:
    settings = Settings(control={"url": control_url(tmp_path)}, bluesky={"pds_uri": network.pds_url},
                        agents=list(agents), publish=publish)
    return Publisher.from_settings(ControlPlane(settings.control.url), settings)


def ingested(plane: ControlPlane, network, author, content: str, **fields) -> tuple[str, str]:
    """A blip posted on the PDS and stored in the control plane as ingest would store it."""
    uri, cid = network.post_blip(author, content, **fields)
    did = uri.removeprefix("at://").split("/")[0]
    record = {"$type": "stream.thought.blip", "content": content, "createdAt": "2025-01-01T00:00:00Z",
              **({"reply": fields["reply"]} if fields.get("reply") else {})}
    Blips(plane).add([facts_of(uri, did, T0 + next(clock), cid, record)])
    return uri, cid


def queue(plane: ControlPlane, agent: str, answering: list[str], *replies: str) -> list[str]:
    """Replies of `agent` in the outbox, answering one window of the blips `answering`."""
    ledger = Ledger(plane)
    window = ledger.decide(agent, {}, answering)
    ledger.finish_window(window, agent, list(replies), 1.0)
    return [f"{window}:{position}" for position in range(len(replies))]


def publish_all(publisher: Publisher) -> list:
    return [publisher.publish(reply) for reply in publisher.due()]


def blips_of(account: AgentAccount) -> list:
    return list_records(account.account)


def state(plane: ControlPlane, reply_id: str) -> tuple:
    with plane.reading() as session:
        reply = session.get(tables.Reply, reply_id)
    return reply.state, reply.error


def made_of(plane: ControlPlane, reply_id: str) -> tuple[int, int]:
    """What a reply's record keys are made of: its time in µs and its position in its window."""
    [reply] = Outbox(plane).replies(1, reply_id)
    return reply.created_us, reply.position


def posts(plane: ControlPlane, reply_id: str | None = None) -> list[tables.Post]:
    query = select(tables.Post).order_by(tables.Post.reply_id, tables.Post.part)
    if reply_id is not None:
        query = query.where(tables.Post.reply_id == reply_id)
    with plane.reading() as session:
        return list(session.scalars(query))


def queued(plane: ControlPlane) -> int:
    with plane.reading() as session:
        return len(session.scalars(select(tables.Reply).where(tables.Reply.state == "queued")).all())


def test_a_reply_is_a_blip_of_the_agents_account_threaded_to_what_it_answers(tmp_path, atproto_network, human_account,
                                                                           scout, proxy):
    publisher = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1", proxy.url))
    plane = publisher.outbox.plane
    question = ingested(plane, atproto_network, human_account, "what is a blip?")
    follow_up = ingested(plane, atproto_network, human_account, "and who reads it?",
                         reply={"root": {"uri": question[0], "cid": question[1]},
                                "parent": {"uri": question[0], "cid": question[1]}})
    before = len(blips_of(scout))
    [first, second] = queue(plane, "scout", [question[0], follow_up[0]], "A short record.", "Agents read it.")

    published = publish_all(publisher)

    assert [(p.reply, p.outcome) for p in published] == [(first, "posted"), (second, "posted")]
    records = {r.uri: r.value for r in blips_of(scout)}
    assert len(records) == before + 2
    record = records[published[0].uris[0]]
    assert record["content"] == "A short record."
    assert record["reply"]["parent"] == {"uri": follow_up[0], "cid": follow_up[1]}  # the newest blip answered
    assert record["reply"]["root"] == {"uri": question[0], "cid": question[1]}  # in that blip's thread
    assert record["answers"] == [{"uri": question[0], "cid": question[1]}, {"uri": follow_up[0], "cid": follow_up[1]}]
    assert published[0].uris[0].startswith(f"at://{scout.did}/stream.thought.blip/")
    assert published[0].uris[0].endswith(record_key(first, *made_of(plane, first), 0))
    assert state(plane, first) == ("posted", None) and state(plane, second) == ("posted", None)
    assert publish_all(publisher) == []
    assert proxy.calls("com.atproto.server.createSession") == [200]  # logged in once for every post


def test_a_long_reply_goes_out_as_a_chain_of_parts(tmp_path, atproto_network, human_account, scout):
    publisher = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1"), max_blip_length=40)
    question = ingested(publisher.outbox.plane, atproto_network, human_account, "tell me everything")
    text = ("The first part says one thing. The second part says another. "
            "And the third part closes the thought without dropping a word.")
    [reply_id] = queue(publisher.outbox.plane, "scout", [question[0]], text)

    [publication] = publish_all(publisher)

    records = {r.uri: r for r in blips_of(scout)}
    parts = [records[uri] for uri in publication.uris]
    assert publication.parts == len(parts) >= 3
    assert all(len(part.value["content"]) <= 40 for part in parts)
    assert " ".join(part.value["content"] for part in parts) == text
    assert parts[0].value["reply"]["parent"] == {"uri": question[0], "cid": question[1]}
    for previous, part in zip(parts, parts[1:]):
        assert part.value["reply"]["parent"] == {"uri": previous.uri, "cid": previous.cid}
        assert part.value["reply"]["root"] == {"uri": question[0], "cid": question[1]}
    assert [(post.part, post.uri) for post in posts(publisher.outbox.plane, reply_id)] == [
        (index, uri) for index, uri in enumerate(publication.uris)]


def test_an_answer_lost_after_the_pds_took_the_record_does_not_post_twice(tmp_path, atproto_network, human_account,
                                                                          scout, proxy, caplog):
    publisher = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1", proxy.url))
    question = ingested(publisher.outbox.plane, atproto_network, human_account, "are you there?")
    queue(publisher.outbox.plane, "scout", [question[0]], "Here, once.")
    before = len(blips_of(scout))
    proxy.drop_answers(1)

    with caplog.at_level(logging.INFO, logger="blipflow"):
        [publication] = publish_all(publisher)

    assert proxy.calls() == [200]  # the PDS took it once; the answer never came back
    assert len(blips_of(scout)) == before + 1
    assert f"{publication.uris[0]} was already posted" in caplog.text


def test_a_second_process_repeating_a_create_the_pds_already_took_posts_nothing_more(
        tmp_path, atproto_network, human_account, scout, proxy):
    first = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1", proxy.url))
    question = ingested(first.outbox.plane, atproto_network, human_account, "anyone?")
    [reply_id] = queue(first.outbox.plane, "scout", [question[0]], "Exactly one of me.")
    before = len(blips_of(scout))
    proxy.hold_answers(1)
    [reply] = first.due()
    late: list = []
    stuck = threading.Thread(target=lambda: late.append(first.publish(reply)), daemon=True)  # dead, to us
    stuck.start()
    assert proxy.held.wait(30)
    first.claims.release()  # its lease on scout's replies lapses while it is stuck: another process takes them

    second = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1", proxy.url))
    [publication] = publish_all(second)

    assert proxy.calls() == [200, 500]  # the reference PDS answers a create under a taken key with a 500
    assert publication.outcome == "posted"
    assert len(blips_of(scout)) == before + 1
    assert state(second.outbox.plane, reply_id) == ("posted", None)
    proxy.release_held()  # the first attempt's connection closes at last: it finds the record there too
    stuck.join(30)
    assert [p.uris for p in late] == [publication.uris]
    assert len(blips_of(scout)) == before + 1
    assert len(posts(second.outbox.plane, reply_id)) == 1


def test_a_key_holding_another_record_fails_the_reply_with_one_line(tmp_path, atproto_network, human_account, scout):
    publisher = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1"))
    question = ingested(publisher.outbox.plane, atproto_network, human_account, "collide?")
    [reply_id] = queue(publisher.outbox.plane, "scout", [question[0]], "mine")
    created_us, position = made_of(publisher.outbox.plane, reply_id)
    rkey = record_key(reply_id, created_us, position, 0)
    atproto_network.client_for(scout.account).com.atproto.repo.create_record({
        "repo": scout.did, "collection": "stream.thought.blip", "rkey": rkey,
        "record": {"$type": "stream.thought.blip", "content": "someone else's", "createdAt": "2025-01-01T00:00:00Z"}})

    with pytest.raises(ReplyRejected) as rejected:
        publish_all(publisher)

    assert str(rejected.value) == (f"reply {reply_id}: record key {rkey} already holds another record "
                                   f"(at://{scout.did}/stream.thought.blip/{rkey})")
    assert state(publisher.outbox.plane, reply_id) == ("failed", str(rejected.value))
    assert publisher.due() == []


def test_a_refused_password_stops_that_account_only_in_one_line_without_secrets(
        tmp_path, atproto_network, human_account, scout, caplog):
    other = agent_account(atproto_network, "other")
    wrong = "wrong-app-password-5150"
    publisher = publisher_for(tmp_path, atproto_network, {**scout.config("scout", "agent-1"), "app_password": wrong},
                              other.config("other", "agent-2"))
    question = ingested(publisher.outbox.plane, atproto_network, human_account, "hello both")
    [refused] = queue(publisher.outbox.plane, "scout", [question[0]], "never posted")
    queue(publisher.outbox.plane, "other", [question[0]], "posted anyway")

    with caplog.at_level(logging.INFO, logger="blipflow"):
        outcomes = []
        for reply in publisher.due():
            try:
                outcomes.append(publisher.publish(reply).outcome)
            except AccountFailed as failure:
                outcomes.append(str(failure))

    assert outcomes == [
        f"account scout ({scout.handle}): the PDS refused the handle or app password "
        "(HTTP 401 AuthenticationRequired)",
        "posted",
    ]
    assert state(publisher.outbox.plane, refused) == ("queued", None)  # it waits for working credentials
    assert [reply.agent for reply in publisher.due()] == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{outcomes[0]}; its replies wait until blipflow runs again with working credentials"]
    assert wrong not in caplog.text and scout.app_password not in caplog.text and other.app_password not in caplog.text
    assert "eyJ" not in caplog.text  # no JWT either


def test_each_account_posts_at_most_its_rate(tmp_path, atproto_network, human_account, scout, caplog):
    publisher = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1"), posts_per_minute=2)
    question = ingested(publisher.outbox.plane, atproto_network, human_account, "count with me")
    queue(publisher.outbox.plane, "scout", [question[0]], "one", "two", "three")

    with caplog.at_level(logging.INFO, logger="blipflow"):
        posted = publish_all(publisher) + publish_all(publisher) + publish_all(publisher)

    assert [p.reply[-1] for p in posted] == ["0", "1"]
    assert f"account scout ({scout.handle}) posted 2 blips in the last minute: its replies wait" in caplog.text
    assert queued(publisher.outbox.plane) == 1


def test_dids_are_learned_from_handles_and_bad_accounts_are_one_line(atproto_network, scout):
    bluesky = Settings(bluesky={"username": scout.handle, "pds_uri": atproto_network.pds_url}).bluesky
    agents = [AgentConfig(name="own", agent_id="a1", handle=scout.handle, pds_uri=atproto_network.pds_url),
              AgentConfig(name="shared", agent_id="a2"),  # publishes as the `bluesky` account
              AgentConfig(name="given", agent_id="a3", did="did:plc:given")]
    assert [agent.did for agent in with_learned_dids(agents, bluesky, timeout=5)] == [scout.did, scout.did,
                                                                                     "did:plc:given"]
    assert with_learned_dids([AgentConfig(name="x", agent_id="a")], Settings().bluesky, timeout=5)[0].did is None

    unknown = AgentConfig(name="ghost", agent_id="a4", handle="ghost-000000.test", pds_uri=atproto_network.pds_url)
    with pytest.raises(AccountFailed) as failure:
        learn_did(account_of(unknown, bluesky), timeout=5)
    assert str(failure.value).startswith("account ghost (ghost-000000.test): could not resolve its handle: "
                                         "the PDS answered HTTP 400")
    assert not failure.value.transient
    dead = AgentConfig(name="far", agent_id="a5", handle=scout.handle, pds_uri="http://127.0.0.1:9")
    with pytest.raises(AccountFailed) as failure:
        learn_did(account_of(dead, bluesky), timeout=5)
    assert str(failure.value) == f"account far ({scout.handle}): cannot reach its PDS http://127.0.0.1:9 ([Errno 111] Connection refused)"
    assert failure.value.transient


def test_prefect_retries_transient_pds_failures_and_not_refusals(tmp_path, atproto_network, human_account, scout,
                                                                 proxy, prefect_server):
    publisher = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1", proxy.url),
                              {**scout.config("refused", "agent-2", proxy.url), "app_password": "nope-nope-nope"})
    question = ingested(publisher.outbox.plane, atproto_network, human_account, "retry me")
    queue(publisher.outbox.plane, "scout", [question[0]], "after two 503s")
    queue(publisher.outbox.plane, "refused", [question[0]], "never")
    proxy.fail_requests(503, 2)
    task = publish_reply.with_options(retry_delay_seconds=0)

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        states = {reply.agent: task(publisher, reply, return_state=True) for reply in publisher.due()}

    assert states["scout"].is_completed() and states["scout"].result().outcome == "posted"
    assert proxy.calls() == [200]  # the two 503s never reached the PDS; the third attempt did
    assert states["refused"].is_failed()
    assert "the PDS refused the handle or app password (HTTP 401" in states["refused"].message
    assert proxy.calls("com.atproto.server.createSession") == [200, 401]  # not tried again


def test_the_publish_flow_posts_each_agent_in_its_own_lane(tmp_path, atproto_network, human_account, scout, proxy,
                                                           prefect_server):
    """An agent whose PDS keeps failing (its task waiting to retry) holds up no other agent."""
    other = agent_account(atproto_network, "other")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "control": {"url": control_url(tmp_path)}, "bluesky": {"pds_uri": atproto_network.pds_url},
        "agents": [scout.config("scout", "agent-1", proxy.url), other.config("other", "agent-2")]}))
    plane = ControlPlane(control_url(tmp_path))
    question = ingested(plane, atproto_network, human_account, "both of you, please")
    [stuck] = queue(plane, "scout", [question[0]], "late but there")
    [free] = queue(plane, "other", [question[0]], "on time")
    proxy.fail_requests(503, 3)  # scout's create fails 3 times: retries 1 + 2 + 5 s later

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        assert publish_flow(config_file=str(config), until_idle=True) == 2

    posted_at = {post.reply_id: post.posted_at for post in posts(plane)}
    assert (posted_at[stuck] - posted_at[free]).total_seconds() > 7  # `other` went first, not after scout's retries
    assert proxy.calls() == [200]
    assert [r.value["content"] for r in blips_of(other)] == ["on time"]


def test_an_idle_publisher_reads_the_outbox_only_after_a_reply_was_queued(tmp_path, atproto_network, human_account,
                                                                          scout):
    publisher = publisher_for(tmp_path, atproto_network, scout.config("scout", "agent-1"))
    reads = []
    outbox = publisher.outbox.replies
    publisher.outbox.replies = lambda *args, **kwargs: reads.append(args) or outbox(*args, **kwargs)
    question = ingested(publisher.outbox.plane, atproto_network, human_account, "wake up")
    assert publisher.due() == [] and len(reads) == 1
    assert publisher.due() == [] and publisher.due() == [] and len(reads) == 1  # nothing written meanwhile
    [reply_id] = queue(publisher.outbox.plane, "scout", [question[0]], "awake")
    assert [reply.id for reply in publisher.due()] == [reply_id] and len(reads) == 2
    assert [reply.id for reply in publisher.due()] == [reply_id] and len(reads) == 3  # due: looked at every time
