"""Web hardening (issue #23).

* ``webhook_events``: the webhook notices already acted on, so a replay is refused
  after a restart and by every process.
* Subscriber ids are never given out twice: on SQLite the table is rebuilt with
  AUTOINCREMENT (without it SQLite hands the highest id to the next row once its
  holder is deleted); PostgreSQL's sequence never reuses one.
* ``subscribers.link_nonce``: a random number every new link carries and that is
  checked against the row, filled in for everyone here. Links already sent carry
  none; they keep working for the subscribers that exist now, the ones up to
  ``meta.legacy_link_max_id`` (no id above it was ever given out before this
  migration, and with AUTOINCREMENT none below it will be again).
* ``subscribers.pending_change``: what a sign-up for an existing address asked for,
  applied only when its confirmation link is used.

Revision ID: 0010
Revises: 0011 (0013, 0012 and 0011 landed first; the chain stays linear)
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0011"
branch_labels = None
depends_on = None

# 62 random bits, drawn by the database for every row (the migration's copy, and any
# row inserted by hand later); the application draws its own (models.new_link_nonce).
NONCE_DEFAULT = {
    "sqlite": "(random() & 4611686018427387903)",
    "postgresql": "(floor(random() * 4611686018427387903))::bigint",
}


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("provider", sa.String(length=16), primary_key=True),
        sa.Column("event_id", sa.String(length=64), primary_key=True),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_webhook_events_seen_at", "webhook_events", ["seen_at"])
    bind = op.get_bind()
    dialect = bind.dialect.name
    nonce = sa.Column("link_nonce", sa.BigInteger(), nullable=False,
                      server_default=sa.text(NONCE_DEFAULT.get(dialect, "0")))
    pending = sa.Column("pending_change", sa.JSON(), nullable=True)
    if dialect == "sqlite":
        # Rebuilt (copied, dropped, renamed): foreign keys are not enforced during
        # migrations (env.py), so the tables that reference subscribers keep their rows.
        with op.batch_alter_table("subscribers", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.add_column(nonce)
            batch.add_column(pending)
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:5]}")
    else:
        op.add_column("subscribers", nonce)
        op.add_column("subscribers", pending)
    highest = bind.execute(sa.text("SELECT max(id) FROM subscribers")).scalar() or 0
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "legacy_link_max_id"))
    op.execute(meta.insert().values(key="legacy_link_max_id", value=str(int(highest))))


def downgrade() -> None:
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "legacy_link_max_id"))
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("subscribers", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": False}) as batch:
            batch.drop_column("pending_change")
            batch.drop_column("link_nonce")
    else:
        op.drop_column("subscribers", "pending_change")
        op.drop_column("subscribers", "link_nonce")
    op.drop_index("ix_webhook_events_seen_at", table_name="webhook_events")
    op.drop_table("webhook_events")
