"""The committed config.yaml.example documents the real defaults."""

from blipflow.config import Settings, load_settings
from tests.support.ingest_process import PROJECT_ROOT


def test_the_example_config_states_exactly_the_defaults(monkeypatch):
    for name in ("BLUESKY_USERNAME", "BLUESKY_PASSWORD", "PDS_URI", "LETTA_API_KEY", "LETTA_BASE_URL",
                 "LETTA_AGENT_ID", "JETSTREAM_INSTANCE"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings(PROJECT_ROOT / "config.yaml.example").model_dump() == Settings().model_dump()
