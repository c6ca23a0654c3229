"""Web hardening (issue #23): the webhook notices already acted on, so a replay is
refused after a restart too.

Revision ID: 0010
Revises: 0013 (which landed first; the chain stays linear)
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("provider", sa.String(length=16), primary_key=True),
        sa.Column("event_id", sa.String(length=64), primary_key=True),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_webhook_events_seen_at", "webhook_events", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_seen_at", table_name="webhook_events")
    op.drop_table("webhook_events")
