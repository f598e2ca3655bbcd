"""The control plane's schema on SQLite and a real PostgreSQL: migrated on first use to exactly the tables
the models declare, once however many processes start at once, and a database it cannot reach is one
line naming it without its password."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from blipflow.control.engine import ControlPlane, ControlPlaneError
from blipflow.control.schema import current, differences, head
from tests.support.control_plane import start_plane
from tests.support.postgres import free_port
from tests.support.racing import racing


def test_first_use_migrates_to_exactly_the_declared_tables(control: ControlPlane) -> None:
    with control.reading() as session:
        connection = session.connection()
        assert current(connection) == head() is not None
        assert differences(connection) == []
        assert {"blips", "windows", "deliveries", "agent_progress", "circuits", "replies", "posts",
                "leases"} <= set(inspect(connection).get_table_names())


def test_the_comparison_sees_a_schema_that_is_not_the_declared_one(control_url: str) -> None:
    """The check above could pass vacuously; a missing column and an extra table must show."""
    ControlPlane(control_url).migrate()
    engine = create_engine(control_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE leases DROP COLUMN acquired_at")
        connection.exec_driver_sql("CREATE TABLE stray (id INTEGER PRIMARY KEY)")
    with engine.connect() as connection:
        found = {(change[0], getattr(change[-1], "name", change[-1])) for change in differences(connection)
                 if isinstance(change, tuple)}
    engine.dispose()
    assert ("add_column", "acquired_at") in found
    assert ("remove_table", "stray") in found


def test_a_second_start_finds_the_schema_current_and_keeps_the_data(control_url: str) -> None:
    from blipflow.control.circuits import Circuit, Circuits

    first = ControlPlane(control_url)
    Circuits(first).save("scout", Circuit("closed", 0, None, None))
    first.dispose()
    again = ControlPlane(control_url)
    assert Circuits(again).all() == {"scout": Circuit("closed", 0, None, None)}
    again.dispose()


@pytest.mark.process
def test_processes_starting_at_once_migrate_it_once(control_url: str) -> None:
    revisions = [report["revision"] for report in racing(start_plane, [(control_url,)] * 4)]
    assert revisions == [head()] * 4


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_database_it_cannot_reach_is_one_line_without_the_password(backend: str, tmp_path) -> None:
    if backend == "postgresql":
        url = f"postgresql+psycopg://blip:s3cret-pw@127.0.0.1:{free_port()}/control"
    else:
        (tmp_path / "data").write_text("a file where the folder should be")
        url = f"sqlite:///{tmp_path / 'data' / 'control.sqlite'}"
    with pytest.raises(ControlPlaneError) as raised:
        with ControlPlane(url).reading():
            pass
    message = str(raised.value)
    assert "\n" not in message and "s3cret-pw" not in message
    assert message.startswith("control plane ")
    if backend == "postgresql":
        assert "postgresql+psycopg://blip:***@127.0.0.1" in message and "cannot connect" in message
    else:
        assert str(tmp_path / "data") in message
