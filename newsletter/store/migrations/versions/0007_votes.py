"""Votes ("more / less like this") and the learned terms a subscriber removed.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subscriber_id", sa.Integer(),
                  sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entry_id", sa.String(length=64),
                  sa.ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("direction", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("subscriber_id", "entry_id", name="uq_vote_subscriber_entry"),
    )
    op.create_index("ix_votes_subscriber_id", "votes", ["subscriber_id"])
    op.create_table(
        "learned_mutes",
        sa.Column("subscriber_id", sa.Integer(),
                  sa.ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("term", sa.String(length=200), primary_key=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("learned_mutes")
    op.drop_index("ix_votes_subscriber_id", table_name="votes")
    op.drop_table("votes")
