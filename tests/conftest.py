import pytest

pytest_plugins = ["tests.support.network", "tests.support.jetstream_standin", "tests.support.prefect_server", "tests.support.letta_server", "tests.support.control_plane", "tests.support.browser", "tests.support.prefect_harness", "tests.support.chat_loop"]

# The peers a test may run against; a test that uses none of them is in the fast tier (`-m "not peer"`).
PEER_FIXTURES = frozenset({
    "atproto_network", "human_account", "jetstream", "prefect_server", "prefect_harness", "scripted_model",
    "letta_server", "keyed_letta_server", "control_postgres", "browser",
})
PEER_PARAMETERS = frozenset({"postgresql", "real"})  # tests run once per backend or against fake and real: those are peers


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "peer: runs against a real peer (PDS, Letta, Prefect, PostgreSQL, Chromium)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        parameters = set(getattr(getattr(item, "callspec", None), "id", "").split("-"))
        if fixtures & PEER_FIXTURES or parameters & PEER_PARAMETERS or item.get_closest_marker("peer"):
            item.add_marker(pytest.mark.peer)
