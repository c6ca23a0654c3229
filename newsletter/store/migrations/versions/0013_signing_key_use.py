"""Which link-signing keys have signed links (``signing_key_uses``), so rotating
``[web] secret_keys`` protects only those: a database that never signed a link with
the key migration 0002 stored accepts the configured keys.

An existing database may already have sent links signed with its stored key (when
``[web] secret_keys`` was unset): if it holds any delivery or any subscriber, that key
is recorded as used now, which keeps the protection it had. A new, empty database
records nothing.

Revision ID: 0013
Revises: 0009
"""

import datetime as dt
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0009"
branch_labels = None
depends_on = None


def _fingerprint(key: str) -> str:
    """Frozen copy of ``newsletter.store.key_use.fingerprint``."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def upgrade() -> None:
    uses = op.create_table(
        "signing_key_uses",
        sa.Column("fingerprint", sa.String(length=64), primary_key=True),
        sa.Column("first_used_at", sa.DateTime(), nullable=False),
        sa.Column("used_by", sa.String(length=32), nullable=False),
    )
    conn = op.get_bind()
    stored = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'secret_key'")).scalar()
    used = conn.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM deliveries) OR EXISTS (SELECT 1 FROM subscribers)"
    )).scalar()
    if stored and used:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        op.bulk_insert(uses, [{"fingerprint": _fingerprint(stored), "first_used_at": now,
                               "used_by": "before 0013"}])


def downgrade() -> None:
    op.drop_table("signing_key_uses")
