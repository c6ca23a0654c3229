"""One edition per subscriber per day, enforced by the database: every ledger row
carries the subscriber's newsletter day, unique per subscriber.

Two planners (a slot run and a plain ``send``, two machines, a worker and the
daemon) each insert with ON CONFLICT DO NOTHING, so only one row per
(subscriber, day) can ever exist, whatever edition asked.

Rows already duplicated by older versions keep the day on their first row only
(NULLs never conflict), so the upgrade cannot fail on old data.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("day", sa.Date(), nullable=True))
    conn = op.get_bind()
    deliveries = sa.table("deliveries", sa.column("id", sa.Integer),
                          sa.column("edition_id", sa.Integer),
                          sa.column("subscriber_id", sa.Integer), sa.column("day", sa.Date))
    editions = sa.table("editions", sa.column("id", sa.Integer), sa.column("day", sa.Date))
    first = (sa.select(sa.func.min(deliveries.c.id))
             .select_from(deliveries.join(editions, editions.c.id == deliveries.c.edition_id))
             .group_by(deliveries.c.subscriber_id, editions.c.day))
    day_of = (sa.select(editions.c.day).where(editions.c.id == deliveries.c.edition_id)
              .scalar_subquery())
    conn.execute(deliveries.update().where(deliveries.c.id.in_(first)).values(day=day_of))
    op.create_index("uq_delivery_subscriber_day", "deliveries", ["subscriber_id", "day"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("uq_delivery_subscriber_day", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("day")
