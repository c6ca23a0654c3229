"""An edition the operator abandoned (``newsletter abandon``): when, by whom and why.
Killing a `send` left its rows pending, and the next `send`, slot, retry job or
worker sent them; an abandoned edition's rows are skipped and the ledger plans,
claims and requeues none of them again. Existing editions were never abandoned.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.add_column(sa.Column("abandoned_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("abandoned_by", sa.String(length=200), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("abandoned_reason", sa.Text(), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.drop_column("abandoned_reason")
        batch.drop_column("abandoned_by")
        batch.drop_column("abandoned_at")
