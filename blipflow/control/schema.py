"""The control plane's schema, migrated with Alembic: the revisions ship inside the package
(`migrations/versions`), so an installed wheel migrates its database the same way a checkout does.

Processes that start together may all find the schema behind: the upgrade runs in one transaction that
first takes a lock (SQLite's write lock, PostgreSQL's advisory lock), so one of them upgrades and the
others then find the schema at the newest revision. Both databases change schemas transactionally.
"""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlmodel import SQLModel

from blipflow.control import tables  # noqa: F401 - the models fill SQLModel.metadata

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant both sides agree on: the key of the advisory lock that upgrades take turns by.
UPGRADE_LOCK = 0x626C6970  # "blip"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(connection: Connection) -> None:
    """Upgrade within the caller's transaction, unless the schema is at the newest revision already."""
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
    if current(connection) != head():
        command.upgrade(alembic_config(connection), "head")


def differences(connection: Connection) -> list:
    """How the database's schema differs from the tables declared in `tables` (empty: not at all)."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, SQLModel.metadata)
