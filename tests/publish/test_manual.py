"""`blipflow publish` on the real local PDS: as the configured account or an agent's, answering a blip,
line by line, and one clear line for every mistake — never a password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.agent_accounts import agent_account
from tests.support.ingest_process import PROJECT_ROOT
from tests.support.network import list_records

CLI = Path(sys.executable).parent / "blipflow"
LEGACY = ("BLUESKY_USERNAME", "BLUESKY_PASSWORD", "PDS_URI", "LETTA_AGENT_ID")


@pytest.fixture(scope="module")
def scout(atproto_network):
    return agent_account(atproto_network, "scout")


@pytest.fixture
def config(tmp_path, atproto_network, human_account, scout) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "bluesky": {"username": human_account.handle, "pds_uri": atproto_network.pds_url,
                    "plc_uri": atproto_network.plc_url},
        "store": {"path": str(tmp_path / "s.duckdb")},
        "publish": {"max_blip_length": 40},
        "agents": [scout.config("scout", "agent-1")],
    }))
    return path


def blipflow(config: Path, *args: str, password: str | None = None, stdin: str | None = None):
    env = {k: v for k, v in __import__("os").environ.items() if k not in LEGACY and not k.startswith("BLIPFLOW_")}
    if password is not None:
        env["BLUESKY_PASSWORD"] = password  # the secret stays out of the config file and the command line
    return subprocess.run([str(CLI), "-c", str(config), "publish", *args], cwd=PROJECT_ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def records(account) -> dict[str, dict]:
    return {record.uri: record.value for record in list_records(account)}


def test_publish_as_the_configured_account(config, human_account):
    result = blipflow(config, "Hello from the global agent network!", password=human_account.password)
    assert result.returncode == 0, result.stderr
    [uri] = result.stdout.split()
    assert records(human_account)[uri]["content"] == "Hello from the global agent network!"
    assert "reply" not in records(human_account)[uri]
    assert human_account.password not in result.stdout + result.stderr


def test_publish_as_an_agent_answering_a_blip_and_splitting_a_long_text(config, atproto_network, human_account, scout):
    root_uri, root_cid = atproto_network.post_blip(human_account, "the start of a thread")
    parent_uri, parent_cid = atproto_network.post_blip(
        human_account, "a reply in it",
        reply={"root": {"uri": root_uri, "cid": root_cid}, "parent": {"uri": root_uri, "cid": root_cid}})
    text = "An answer long enough that it needs two blips."

    result = blipflow(config, text, "--as", "scout", "--reply-to", parent_uri)

    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()
    posted = records(scout.account)
    assert posted[first]["reply"] == {"root": {"uri": root_uri, "cid": root_cid},
                                      "parent": {"uri": parent_uri, "cid": parent_cid}}
    assert posted[second]["reply"]["parent"]["uri"] == first
    assert posted[second]["reply"]["root"] == {"uri": root_uri, "cid": root_cid}
    assert f"{posted[first]['content']} {posted[second]['content']}" == text
    assert scout.app_password not in result.stdout + result.stderr


def test_interactive_posts_each_line_until_end_of_input(config, human_account):
    result = blipflow(config, "--interactive", password=human_account.password, stdin="first line\n\nsecond line\n")
    assert result.returncode == 0, result.stderr
    uris = result.stdout.replace("> ", "").split()
    assert [records(human_account)[uri]["content"] for uri in uris] == ["first line", "second line"]
    assert "one blip per line; Ctrl-D stops" in result.stderr


@pytest.mark.parametrize(
    ("args", "password", "line"),
    [
        (["hi", "--as", "ghost"], None, "blipflow: --as ghost: no such agent in {config} (agents: scout)"),
        (["hi"], "wrong-password-77", "blipflow: account default ({handle}): the PDS refused the handle or app "
                                      "password (HTTP 401 AuthenticationRequired)"),
        (["hi", "--reply-to", "https://example.com/x"], "", "blipflow: --reply-to https://example.com/x: "
                                                           "expected at://<did>/<collection>/<rkey>"),
        (["hi", "--reply-to", "at://{did}/stream.thought.blip/3zzzzzzzzzzzz"], "",
         "blipflow: --reply-to at://{did}/stream.thought.blip/3zzzzzzzzzzzz: could not read it: "
         "the PDS answered HTTP 400 RecordNotFound"),
    ],
    ids=["unknown-agent", "wrong-password", "not-an-at-uri", "no-such-record"],
)
def test_mistakes_are_one_line_without_secrets(config, human_account, args, password, line):
    fill = {"config": config, "handle": human_account.handle, "did": human_account.did}
    result = blipflow(config, *[arg.format(**fill) for arg in args], password=password or human_account.password)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [line.format(**fill)]
    assert human_account.password not in result.stdout + result.stderr


def test_an_unreachable_pds_is_one_line(tmp_path, human_account):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"bluesky": {"username": human_account.handle, "pds_uri": "http://127.0.0.1:9"}}))
    result = blipflow(config, "hi", password=human_account.password)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"blipflow: account default ({human_account.handle}): cannot reach its PDS "
                                          "http://127.0.0.1:9 ([Errno 111] Connection refused)"]


@pytest.mark.process
def test_without_an_account_it_says_which_setting_is_missing(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("store:\n  lock_timeout: 5\n")
    result = blipflow(config, "hi")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"blipflow: bad config: {config}: bluesky.username: not set; publishing "
                                          "needs an account (or --as an agent that has one)"]
