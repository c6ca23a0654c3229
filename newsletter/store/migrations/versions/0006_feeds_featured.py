"""Entries keep the day a listing featured them and their authors' affiliations;
``source_runs`` remembers each source's last ingest for ``newsletter sources list``.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.add_column(sa.Column("featured", sa.Date(), nullable=True))
        batch.add_column(sa.Column("affiliations", sa.JSON(), nullable=False,
                                   server_default="{}"))
    op.create_table(
        "source_runs",
        sa.Column("name", sa.String(length=500), primary_key=True),
        sa.Column("origin", sa.Text(), nullable=False, server_default=""),
        sa.Column("ran_at", sa.DateTime(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("papers", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("new", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("not_modified", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("source_runs")
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("affiliations")
        batch.drop_column("featured")
