"""Posting a blip by hand (`blipflow publish`, thought.stream's publish_blip.py): as the configured
account or an agent's, optionally answering a blip given by its at-uri, split like an agent's reply
when it is longer than a blip may be."""

from __future__ import annotations

from datetime import datetime, timezone

from blipflow.config import ConfigError, Settings
from blipflow.model.blip import BLIP_COLLECTION
from blipflow.model.failures import Failure
from blipflow.model.refs import Ref
from blipflow.network.accounts import (
    Account,
    Session,
    agent_account,
    default_account,
    explain,
    new_client,
    plain,
)
from blipflow.network.identity import IdentityResolver
from blipflow.publish.records import blip_record, split_content


def account_to_post_as(settings: Settings, agent: str | None, config_file: str) -> Account:
    """The `bluesky` account, or with `agent` the account that agent publishes as."""
    if agent is None:
        account = default_account(settings.bluesky)
        if account is None:
            raise ConfigError(f"bad config: {config_file}: bluesky.username: not set; publishing needs an account "
                              "(or --as an agent that has one)")
        return account
    configured = {candidate.name: candidate for candidate in settings.agents}
    if agent not in configured:
        raise Failure(f"--as {agent}: no such agent in {config_file} (agents: {', '.join(configured) or 'none'})",
                      transient=False)
    account = agent_account(configured[agent], settings.bluesky)
    if account is None:
        raise ConfigError(f"bad config: {config_file}: agents: {agent} has no handle, and bluesky.username is not set")
    return account


def thread_of(uri: str, resolver: IdentityResolver, *, timeout: float) -> tuple[Ref, Ref]:
    """(root, parent) for a blip answering the record at `uri`, read from its author's PDS."""
    parts = uri.removeprefix("at://").split("/")
    if not uri.startswith("at://did:") or len(parts) != 3 or not all(parts):
        raise Failure(f"--reply-to {uri}: expected at://<did>/<collection>/<rkey>", transient=False)
    did, collection, rkey = parts
    try:
        pds = next(service["serviceEndpoint"] for service in resolver.did_document(did).get("service", [])
                   if str(service.get("id", "")).endswith("#atproto_pds"))
    except Exception as error:  # noqa: BLE001 - whatever the directory says, one line
        raise Failure(f"--reply-to {uri}: cannot find the PDS of {did} ({error})", transient=True) from None
    client = new_client(pds, timeout)
    try:
        found = client.com.atproto.repo.get_record({"repo": did, "collection": collection, "rkey": rkey})
    except Exception as error:  # noqa: BLE001
        reason, transient = explain(error, "read it", pds)
        raise Failure(f"--reply-to {uri}: {reason}", transient=transient) from None
    finally:
        client.request.close()
    parent = Ref(found.uri, found.cid)
    reply = plain(found.value).get("reply")
    root = reply.get("root") if isinstance(reply, dict) else None
    if isinstance(root, dict) and isinstance(root.get("uri"), str) and isinstance(root.get("cid"), str):
        return Ref(root["uri"], root["cid"]), parent
    return parent, parent


def post(session: Session, content: str, *, max_blip_length: int, reply_to: tuple[Ref, Ref] | None = None) -> list[Ref]:
    """Post `content` now; a long text goes as a chain of blips. Returns each blip's reference."""
    created_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    root, parent = reply_to if reply_to else (None, None)
    posted: list[Ref] = []
    for text in split_content(content, max_blip_length):
        record = blip_record(text, created_at, parent=parent, root=root)
        posted.append(session.create_record(BLIP_COLLECTION, record))
        root, parent = root or posted[0], posted[-1]
    return posted
