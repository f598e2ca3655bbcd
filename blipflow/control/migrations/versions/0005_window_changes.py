"""Window changes: each window carries the mark of the write that changed it last (see
`blipflow.control.changes`), so that analytics copies only the windows written since its last copy.
Windows written before carry 0, which the first copy reads like any other.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('windows', sa.Column('changed', sa.BigInteger(), server_default='0', nullable=False))
    op.create_index('ix_windows_changed', 'windows', ['changed'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_windows_changed', table_name='windows')
    op.drop_column('windows', 'changed')
