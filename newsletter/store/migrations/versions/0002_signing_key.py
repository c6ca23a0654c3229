"""A signing key for links, made once when the database is created.

Revision ID: 0002
Revises: 0001
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.bulk_insert(meta, [{"key": "secret_key", "value": secrets.token_urlsafe(32)}])


def downgrade() -> None:
    op.execute("DELETE FROM meta WHERE key = 'secret_key'")
