"""Alembic's entry point: it runs on the connection `schema.upgrade_to_head` hands it, in its transaction."""

from alembic import context
from sqlmodel import SQLModel

from blipflow.control import tables  # noqa: F401 - the models fill SQLModel.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("control plane migrations run through blipflow.control.schema, on its connection")
context.configure(connection=connection, target_metadata=SQLModel.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
