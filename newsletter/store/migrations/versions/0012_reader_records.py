"""What each sent email showed (``deliveries.shown``): its picks with their sections,
explanations, matched terms and the keywords used, as compact JSON written when the
email is sent. View in browser, the archive and the Atom feed render from it. Rows
sent before this revision have none and render as before.

Numbered 0012 (reserved for it) and chained after 0013, the newest revision when it
was added.

Revision ID: 0012
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("shown", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("shown")
