"""Takeovers: the DuckDB stores of the previous layout whose ledger and outbox the control plane took over.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('takeovers',
    sa.Column('store', sa.String(), nullable=False),
    sa.Column('blips', sa.Integer(), nullable=False),
    sa.Column('windows', sa.Integer(), nullable=False),
    sa.Column('replies', sa.Integer(), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('store')
    )


def downgrade() -> None:
    op.drop_table('takeovers')
