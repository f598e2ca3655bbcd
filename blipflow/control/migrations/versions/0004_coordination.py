"""Coordination: every decision's reason in the ledger, the blips handed but not yet sent, and how far
coordination has decided with the state it carries on with.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

UNSENT = sa.text("window_id IS NULL AND skip_reason IS NULL")


def upgrade() -> None:
    with op.batch_alter_table('deliveries') as table:
        table.add_column(sa.Column('handed_for', sa.String(), nullable=True))
        table.add_column(sa.Column('strategy', sa.String(), nullable=True))
        table.add_column(sa.Column('detail', sa.Text(), nullable=True))
    op.create_index('ix_deliveries_unsent', 'deliveries', ['agent'], unique=False,
                    sqlite_where=UNSENT, postgresql_where=UNSENT)
    op.create_table('coordination',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('through_seq', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('coordination')
    op.drop_index('ix_deliveries_unsent', table_name='deliveries')
    with op.batch_alter_table('deliveries') as table:
        table.drop_column('detail')
        table.drop_column('strategy')
        table.drop_column('handed_for')
