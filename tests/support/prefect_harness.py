"""Prefect's own test harness for flows run inside the test process: a temporary API server on SQLite,
started once for the session, with flow heartbeats off (nothing here watches for crashed runs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    # Imported here, not above: it loads Prefect's server (~2.5 s of CPU), which only the tests using it need.
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), prefect_test_harness(server_startup_timeout=120):
        yield
