"""Erased addresses, kept only as a hash so they cannot be re-added.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("hash", sa.String(length=64), primary_key=True),
        sa.Column("reason", sa.String(length=32), nullable=False, server_default="erased"),
        sa.Column("at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
