"""The operator console: admin users (Argon2 hashes), their server-side sessions
(so logout and remove-user end a session at once), failed-login records (limits per
user and per client that hold across processes), and on PostgreSQL trigram indexes
so the console's "contains" searches stay fast with a million subscribers.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRIGRAM_INDEXES = (
    ("ix_subscribers_email_trgm", "subscribers", "email"),
    ("ix_subscribers_keywords_trgm", "subscribers", "keywords"),
    ("ix_entries_title_trgm", "entries", "title"),
)


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_login_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("admin_users.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "admin_login_attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_admin_login_attempts_name_at", "admin_login_attempts", ["name", "at"])
    op.create_index("ix_admin_login_attempts_client_at", "admin_login_attempts",
                    ["client", "at"])
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # pg_trgm may be unavailable or need rights we lack: then search still works,
        # by sequential scan; the savepoint keeps the migration's transaction usable.
        try:
            with conn.begin_nested():
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except sa.exc.DBAPIError:
            return
        for name, table, column in TRIGRAM_INDEXES:
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
                                 f"USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for name, _table, _column in TRIGRAM_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    op.drop_index("ix_admin_login_attempts_client_at", "admin_login_attempts")
    op.drop_index("ix_admin_login_attempts_name_at", "admin_login_attempts")
    op.drop_table("admin_login_attempts")
    op.drop_table("admin_sessions")
    op.drop_table("admin_users")
