"""The control plane's tables: the blips dispatch needs, the delivery ledger, circuits, the outbox and leases.

Revision ID: 0001
Revises:
Create Date: 2026-12-06

Times are plain timestamps with zone here; `tables.UtcDateTime` stores UTC in them on both backends.
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_progress',
    sa.Column('agent', sa.String(), nullable=False),
    sa.Column('decided_through', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('agent')
    )
    op.create_table('blips',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uri', sa.String(), nullable=False),
    sa.Column('did', sa.String(), nullable=False),
    sa.Column('cid', sa.String(), nullable=True),
    sa.Column('time_us', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('content', sa.Text(), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('root_uri', sa.String(), nullable=True),
    sa.Column('root_cid', sa.String(), nullable=True),
    sa.Column('parent_uri', sa.String(), nullable=True),
    sa.Column('parent_cid', sa.String(), nullable=True),
    sa.Column('mentions', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('refs', sa.JSON(), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('uri', name='uq_blips_uri'),
    sqlite_autoincrement=True,
    )
    op.create_index('ix_blips_time_us', 'blips', ['time_us'], unique=False)
    op.create_table('circuits',
    sa.Column('agent', sa.String(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('agent')
    )
    op.create_table('leases',
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('holder', sa.String(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('windows',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('agent', sa.String(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('strikes', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('settled', sa.Boolean(), nullable=True),
    sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('letta_ms', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_windows_agent'), 'windows', ['agent'], unique=False)
    op.create_index('ix_windows_state_created_at', 'windows', ['state', 'created_at'], unique=False)
    op.create_table('deliveries',
    sa.Column('agent', sa.String(), nullable=False),
    sa.Column('blip_uri', sa.String(), nullable=False),
    sa.Column('window_id', sa.String(), nullable=True),
    sa.Column('skip_reason', sa.String(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['blip_uri'], ['blips.uri'], ),
    sa.ForeignKeyConstraint(['window_id'], ['windows.id'], ),
    sa.PrimaryKeyConstraint('agent', 'blip_uri')
    )
    op.create_index(op.f('ix_deliveries_window_id'), 'deliveries', ['window_id'], unique=False)
    op.create_table('replies',
    sa.Column('id', sa.String(), nullable=False),
    sa.Column('window_id', sa.String(), nullable=False),
    sa.Column('agent', sa.String(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['window_id'], ['windows.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_replies_agent_created_at', 'replies', ['agent', 'created_at'], unique=False)
    op.create_index('ix_replies_state_created_at', 'replies', ['state', 'created_at'], unique=False)
    op.create_index(op.f('ix_replies_window_id'), 'replies', ['window_id'], unique=False)
    op.create_table('posts',
    sa.Column('reply_id', sa.String(), nullable=False),
    sa.Column('part', sa.Integer(), nullable=False),
    sa.Column('account', sa.String(), nullable=False),
    sa.Column('uri', sa.String(), nullable=False),
    sa.Column('cid', sa.String(), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['reply_id'], ['replies.id'], ),
    sa.PrimaryKeyConstraint('reply_id', 'part')
    )
    op.create_index('ix_posts_account_posted_at', 'posts', ['account', 'posted_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_posts_account_posted_at', table_name='posts')
    op.drop_table('posts')
    op.drop_index(op.f('ix_replies_window_id'), table_name='replies')
    op.drop_index('ix_replies_state_created_at', table_name='replies')
    op.drop_index('ix_replies_agent_created_at', table_name='replies')
    op.drop_table('replies')
    op.drop_index(op.f('ix_deliveries_window_id'), table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_index('ix_windows_state_created_at', table_name='windows')
    op.drop_index(op.f('ix_windows_agent'), table_name='windows')
    op.drop_table('windows')
    op.drop_table('leases')
    op.drop_table('circuits')
    op.drop_index('ix_blips_time_us', table_name='blips')
    op.drop_table('blips')
    op.drop_table('agent_progress')
