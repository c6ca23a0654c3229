"""Entries remember their arXiv id and normalized-title key, so a paper first seen
without an arXiv id (a page dump) and later with one (the API) stays one entry.

Revision ID: 0003
Revises: 0002
"""

import hashlib
import re
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def title_id(title: str) -> str:
    """The title key as ingest made it when this migration was written (a frozen copy
    of ``ingest.papers.title_id``: a migration must not change when live code does)."""
    s = unicodedata.normalize("NFKC", title).casefold()
    s = " ".join(re.sub(r"[^\w]+", " ", s).split())
    return "t:" + hashlib.sha1(s.encode("utf-8")).hexdigest()[:16]


def upgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.add_column(sa.Column("arxiv_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("title_key", sa.String(length=40), nullable=False,
                                   server_default=""))
        batch.create_index("ix_entries_arxiv_id", ["arxiv_id"])
        batch.create_index("ix_entries_title_key", ["title_key"])
    conn = op.get_bind()
    entries = sa.table("entries", sa.column("id", sa.String), sa.column("title", sa.Text),
                       sa.column("arxiv_id", sa.String), sa.column("title_key", sa.String))
    rows = conn.execute(sa.select(entries.c.id, entries.c.title)).all()
    for ident, title in rows:
        conn.execute(entries.update().where(entries.c.id == ident).values(
            title_key=title_id(title),
            arxiv_id=None if ident.startswith("t:") else ident))


def downgrade() -> None:
    with op.batch_alter_table("entries") as batch:
        batch.drop_index("ix_entries_title_key")
        batch.drop_index("ix_entries_arxiv_id")
        batch.drop_column("title_key")
        batch.drop_column("arxiv_id")
