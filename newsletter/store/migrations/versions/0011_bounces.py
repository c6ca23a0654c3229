"""Bounces and deferrals: the messages read from the bounce mailbox (by digest, so
one is acted on once), and a deferred delivery's first and next try.

Revision ID: 0011
Revises: 0012 (in main before this one; the chain stays linear)
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mail_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.String(length=64), nullable=False, unique=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.Integer(),
                  sa.ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True),
        sa.Column("subscriber_id", sa.Integer(),
                  sa.ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_mail_reports_delivery_id", "mail_reports", ["delivery_id"])
    op.create_index("ix_mail_reports_subscriber_id", "mail_reports", ["subscriber_id"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("first_try_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("next_try_at", sa.DateTime(), nullable=True))
    op.create_index("ix_delivery_status_next_try", "deliveries", ["status", "next_try_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_status_next_try", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("next_try_at")
        batch.drop_column("first_try_at")
    op.drop_index("ix_mail_reports_subscriber_id", table_name="mail_reports")
    op.drop_index("ix_mail_reports_delivery_id", table_name="mail_reports")
    op.drop_table("mail_reports")
