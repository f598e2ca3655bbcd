import multiprocessing.util
import platform
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest_plugins = ["tests.support.network", "tests.support.jetstream_standin", "tests.support.prefect_server", "tests.support.letta_server", "tests.support.control_plane", "tests.support.browser", "tests.support.prefect_harness", "tests.support.chat_loop"]

# The tiers (README, "The suite has two tiers"): a test that uses a peer is marked `peer`, one that starts
# a process of its own is marked `process` where it is written, and every other test is marked `fast`.
# The peers a test may run against:
PEER_FIXTURES = frozenset({
    "atproto_network", "human_account", "jetstream", "prefect_server", "prefect_harness", "scripted_model",
    "letta_server", "keyed_letta_server", "control_postgres", "browser",
})
PEER_PARAMETERS = frozenset({"postgresql", "real"})  # tests run once per backend or against fake and real: those are peers
# How Python announces a new process (audit events); multiprocessing's spawn announces none, see below.
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn",
                            "os.system"})


class ProcessInTheFastTier(RuntimeError):
    """A test marked `fast` started a process: it belongs in the `process` tier, and must say so."""


_fast_test: str | None = None  # the test of the fast tier running now, if one is


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "peer: runs against a real peer (PDS, Letta, Prefect, PostgreSQL, Chromium)")
    config.addinivalue_line("markers", "process: starts processes of its own (blipflow commands, spawned workers, "
                                       "a lock held by another interpreter)")
    config.addinivalue_line("markers", "fast: neither `peer` nor `process` (set by tests/conftest.py): the fast tier")
    # letta_client's first request asks platform.platform(), whose first call runs `uname -p`: asked here,
    # before any test, so that process is no test's.
    platform.processor()
    sys.addaudithook(_refuse_a_process_in_the_fast_tier)
    multiprocessing.util.spawnv_passfds = _announced(multiprocessing.util.spawnv_passfds)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        parameters = set(getattr(getattr(item, "callspec", None), "id", "").split("-"))
        if fixtures & PEER_FIXTURES or parameters & PEER_PARAMETERS or item.get_closest_marker("peer"):
            item.add_marker(pytest.mark.peer)
        if not item.get_closest_marker("peer") and not item.get_closest_marker("process"):
            item.add_marker(pytest.mark.fast)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """While a `fast` test runs (its setup, call and teardown), starting a process fails it: the fast tier
    stays free of processes because a test that starts one without its marker cannot pass."""
    global _fast_test
    _fast_test = item.nodeid if item.get_closest_marker("fast") else None
    try:
        return (yield)
    finally:
        _fast_test = None


def _refuse_a_process_in_the_fast_tier(event: str, _args: tuple) -> None:
    if event in PROCESS_EVENTS:
        _refuse(event)


def _refuse(how: str) -> None:
    if _fast_test is not None:
        raise ProcessInTheFastTier(f"{_fast_test} starts a process ({how}): mark it @pytest.mark.process")


def _announced(spawn: Callable[..., Any]) -> Callable[..., Any]:
    """multiprocessing's own launcher (spawned workers, its resource tracker), refused like the others."""
    def spawnv_passfds(*args: Any, **kwargs: Any) -> Any:
        _refuse("multiprocessing")
        return spawn(*args, **kwargs)
    return spawnv_passfds
