"""Settings: defaults, config.yaml, thought.stream env names, BLIPFLOW_* overrides, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blipflow.config import ConfigError, load_settings
from blipflow.model.settings import PUBLIC_JETSTREAM_INSTANCES

CLI = Path(sys.executable).parent / "blipflow"
SECRET_PASSWORD = "hunter2-pw-7Qx"
SECRET_KEY = "sk-letta-9Zr4"

ENV_NAMES = ("BLUESKY_USERNAME", "BLUESKY_PASSWORD", "PDS_URI", "LETTA_API_KEY", "LETTA_BASE_URL",
             "JETSTREAM_INSTANCE", "LETTA_AGENT_ID")


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_NAMES and not k.upper().startswith("BLIPFLOW_")}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No settings leak in from the machine: no env names we read, no config.yaml in the working folder."""
    for name in list(os.environ):
        if name in ENV_NAMES or name.upper().startswith("BLIPFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: object = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message, f"config errors are one line: {message!r}"
    assert message.startswith("bad config: "), message
    return message


# -- loading ---------------------------------------------------------------------------------------


def test_defaults_without_any_file() -> None:
    settings = load_settings()
    assert settings.jetstream.instances == PUBLIC_JETSTREAM_INSTANCES
    assert settings.jetstream.wanted_collections == ["stream.thought.blip"]
    assert settings.store.path == Path("data/blipflow.duckdb")
    assert settings.store.lock_timeout == 60.0
    assert settings.bluesky.password is None and settings.letta.api_key is None
    assert settings.agents == []


def test_values_from_yaml_file(tmp_path: Path) -> None:
    file = write(tmp_path / "my.yaml", """
store:
  path: elsewhere/x.duckdb
  lock_timeout: 2.5
jetstream:
  instances: [ws://127.0.0.1:6008]
  wanted_dids: [did:plc:abc]
ingest:
  flush_interval: 0.5
agents:
  - name: alice
    agent_id: agent-1
""")
    settings = load_settings(file)
    assert settings.store.path == Path("elsewhere/x.duckdb")
    assert settings.store.lock_timeout == 2.5
    assert settings.jetstream.instances == ["ws://127.0.0.1:6008"]
    assert settings.jetstream.wanted_dids == ["did:plc:abc"]
    assert settings.jetstream.wanted_collections == ["stream.thought.blip"]  # untouched fields keep defaults
    assert settings.ingest.flush_interval == 0.5
    assert [(a.name, a.agent_id) for a in settings.agents] == [("alice", "agent-1")]


def test_default_config_yaml_and_blipflow_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "config.yaml", "store:\n  lock_timeout: 3\n")
    assert load_settings().store.lock_timeout == 3
    monkeypatch.setenv("BLIPFLOW_CONFIG", str(write(tmp_path / "other.yaml", "store:\n  lock_timeout: 4\n")))
    assert load_settings().store.lock_timeout == 4
    monkeypatch.setenv("BLIPFLOW_CONFIG", str(tmp_path / "gone.yaml"))  # named explicitly, so it must exist
    assert "gone.yaml" in config_error()


def test_thought_stream_env_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "bluesky:\n  username: from-file\n  pds_uri: http://127.0.0.1:2583\n")
    monkeypatch.setenv("BLUESKY_USERNAME", "alice.test")
    monkeypatch.setenv("BLUESKY_PASSWORD", SECRET_PASSWORD)
    monkeypatch.setenv("LETTA_API_KEY", SECRET_KEY)
    monkeypatch.setenv("JETSTREAM_INSTANCE", "jet1.example, ws://127.0.0.1:6008 ,")
    monkeypatch.setenv("LETTA_AGENT_ID", "agent-xyz")
    settings = load_settings(file)
    assert settings.bluesky.username == "alice.test"  # env beats the file
    assert settings.bluesky.pds_uri == "http://127.0.0.1:2583"  # the rest of the file's section stays
    assert settings.bluesky.password.get_secret_value() == SECRET_PASSWORD
    assert settings.letta.api_key.get_secret_value() == SECRET_KEY
    assert settings.jetstream.instances == ["jet1.example", "ws://127.0.0.1:6008"]
    assert [(a.name, a.agent_id) for a in settings.agents] == [("default", "agent-xyz")]


def test_letta_agent_id_does_not_replace_configured_agents(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "agents:\n  - {name: bob, agent_id: agent-b}\n")
    monkeypatch.setenv("LETTA_AGENT_ID", "agent-xyz")
    assert [a.agent_id for a in load_settings(file).agents] == ["agent-b"]


def test_blipflow_env_overrides_file_field_by_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "store:\n  path: from-file.duckdb\n  lock_timeout: 3\n")
    monkeypatch.setenv("BLIPFLOW_STORE__LOCK_TIMEOUT", "7.5")
    monkeypatch.setenv("BLIPFLOW_INGEST__FLUSH_MAX_EVENTS", "123")
    settings = load_settings(file)
    assert settings.store.lock_timeout == 7.5
    assert settings.store.path == Path("from-file.duckdb")
    assert settings.ingest.flush_max_events == 123


# -- bad configs: one line naming the field and where it came from ---------------------------------


def test_missing_explicit_file(tmp_path: Path) -> None:
    message = config_error(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "not found" in message


def test_unreadable_file(tmp_path: Path) -> None:
    # Tests run as root, so chmod 000 would still be readable; a directory in place of the file is not.
    (tmp_path / "dir.yaml").mkdir()
    message = config_error(tmp_path / "dir.yaml")
    assert "dir.yaml" in message and "cannot read" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    file = write(tmp_path / "broken.yaml", "store:\n  path: x.duckdb\n  lock_timeout: [1, 2\nidentity: {}\n")
    message = config_error(file)
    assert "broken.yaml" in message and "not valid YAML" in message
    assert " line 4" in message


def test_not_utf8_file(tmp_path: Path) -> None:
    file = tmp_path / "latin.yaml"
    file.write_bytes(b"store:\n  path: caf\xe9.duckdb\n")
    assert "latin.yaml" in config_error(file)


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    message = config_error(write(tmp_path / "list.yaml", "- store\n- ingest\n"))
    assert "list.yaml" in message and "mapping" in message


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("store:\n  pathh: x\n", "store.pathh", "unknown setting"),
        ("colour: blue\n", "colour", "unknown setting"),
        ("store:\n  lock_timeout: soon\n", "store.lock_timeout", "'soon'"),
        ("ingest:\n  flush_interval: 0\n", "ingest.flush_interval", "greater than 0"),
        ("jetstream:\n  instances: []\n", "jetstream.instances", "at least 1"),
        ("agents:\n  - name: alice\n", "agents.0.agent_id", "required setting is missing"),
        ("publish:\n  max_blip_length: 5\n", "publish.max_blip_length", "greater than or equal to 20"),
        ("publish:\n  posts_per_minute: 0\n", "publish.posts_per_minute", "greater than or equal to 1"),
        ("publish:\n  poll_every: 1\n", "publish.poll_every", "unknown setting"),
        ("agents:\n  - {name: a, agent_id: b, handel: a.test}\n", "agents.0.handel", "unknown setting"),
    ],
)
def test_bad_field_names_field_and_file(tmp_path: Path, text: str, field: str, words: str) -> None:
    message = config_error(write(tmp_path / "bad.yaml", text))
    assert f"bad.yaml: {field}: " in message
    assert words in message


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "store:\n  lock_timeout: 3\n")
    monkeypatch.setenv("BLIPFLOW_STORE__LOCK_TIMEOUT", "later")
    message = config_error(file)
    assert "BLIPFLOW_STORE__LOCK_TIMEOUT: store.lock_timeout:" in message
    assert "c.yaml" not in message


def test_env_list_that_is_not_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLIPFLOW_JETSTREAM__INSTANCES", "a.example,b.example")
    assert "BLIPFLOW_JETSTREAM__INSTANCES" in config_error()


def test_secrets_of_the_wrong_type_are_not_echoed(tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "bluesky:\n  password: 98765432\nletta:\n  api_key: 13572468\n  timeout: x\n")
    message = config_error(file)
    assert "bluesky.password" in message and "letta.api_key" in message and "letta.timeout" in message
    assert "98765432" not in message and "13572468" not in message


# -- through the CLI -------------------------------------------------------------------------------


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], cwd=cwd, env={**clean_environ(), **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.process
@pytest.mark.parametrize(
    "text",
    [
        None,  # missing file
        "store:\n  lock_timeout: [\n",  # not YAML
        "bluesky:\n  passwrd: oops\n",  # unknown key
    ],
    ids=["missing", "not-yaml", "unknown-key"],
)
def test_cli_bad_config_is_one_line_without_secrets(tmp_path: Path, text: str | None) -> None:
    if text is not None:
        write(tmp_path / "bad.yaml", text)
    result = run_cli(["-c", "bad.yaml", "config"], tmp_path,
                     BLUESKY_PASSWORD=SECRET_PASSWORD, LETTA_API_KEY=SECRET_KEY)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("blipflow: bad config:") and "bad.yaml" in lines[0]
    assert "Traceback" not in result.stderr
    assert SECRET_PASSWORD not in result.stderr + result.stdout
    assert SECRET_KEY not in result.stderr + result.stdout


@pytest.mark.process
def test_cli_config_masks_secrets(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", f"bluesky:\n  username: alice.test\nletta:\n  api_key: {SECRET_KEY}\n")
    result = run_cli(["config"], tmp_path, BLUESKY_PASSWORD=SECRET_PASSWORD, BLIPFLOW_STORE__LOCK_TIMEOUT="9")
    assert result.returncode == 0, result.stderr
    assert '"username": "alice.test"' in result.stdout
    assert '"lock_timeout": 9.0' in result.stdout
    assert '"password": "**********"' in result.stdout and '"api_key": "**********"' in result.stdout
    assert SECRET_PASSWORD not in result.stdout + result.stderr
    assert SECRET_KEY not in result.stdout + result.stderr


# -- publishing ------------------------------------------------------------------------------------


def test_agent_accounts_and_publish_settings(tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", f"""
bluesky:
  pds_uri: http://127.0.0.1:2583
publish:
  max_blip_length: 500
  posts_per_minute: 4
agents:
  - name: scout
    agent_id: agent-1
    handle: scout.test
    app_password: {SECRET_PASSWORD}
  - name: elder
    agent_id: agent-2
    handle: elder.test
    pds_uri: http://127.0.0.1:2999
""")
    settings = load_settings(file)
    scout, elder = settings.agents
    assert (scout.handle, scout.app_password.get_secret_value(), scout.pds_uri, scout.did) == (
        "scout.test", SECRET_PASSWORD, None, None)  # its PDS is the bluesky one; its DID is learned
    assert SECRET_PASSWORD not in repr(settings)
    assert (elder.pds_uri, elder.app_password) == ("http://127.0.0.1:2999", None)
    assert (settings.publish.max_blip_length, settings.publish.posts_per_minute) == (500, 4)
    assert settings.publish.poll_interval == 0.05  # untouched fields keep defaults


def test_an_app_password_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "agents:\n  - {name: a, agent_id: b, app_password: 86753099}\n")
    message = config_error(file)
    assert "agents.0.app_password" in message and "86753099" not in message


@pytest.mark.process
def test_cli_config_masks_app_passwords(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", f"agents:\n  - {{name: a, agent_id: b, handle: a.test, app_password: {SECRET_PASSWORD}}}\n")
    result = run_cli(["config"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"app_password": "**********"' in result.stdout and '"handle": "a.test"' in result.stdout
    assert SECRET_PASSWORD not in result.stdout + result.stderr
