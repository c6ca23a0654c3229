"""What keeps a reader's days right across changes:

* ``entry_titles``: every title key a paper has had. A new version may retitle a
  paper; a source that still lists it under the old title (a page dump, with no arXiv
  id) found no entry and stored it again, and readers were sent it twice.
* ``subscribers.active_since``: when the subscription last became active (confirmed,
  resumed, subscribed again). A day missed while paused or unsubscribed is not owed
  late. Existing rows have none: active as long as they exist, as before.
* ``deliveries.keywords``: the profile a deferred row's picks were made for. A try
  after the reader changed their keywords explained the old picks with the new
  profile, and the email said why for none of them.

Revision ID: 0014
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0010"
branch_labels = None
depends_on = None
KEEP_IDS = {"sqlite_autoincrement": True}  # a rebuilt subscribers table keeps AUTOINCREMENT


def upgrade() -> None:
    op.create_table(
        "entry_titles",
        sa.Column("title_key", sa.String(length=40), primary_key=True),
        sa.Column("entry_id", sa.String(length=64),
                  sa.ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_entry_titles_entry_id", "entry_titles", ["entry_id"])
    op.execute("INSERT INTO entry_titles (title_key, entry_id) "
               "SELECT title_key, id FROM entries WHERE title_key <> ''")
    # (on SQLite, should a rebuild happen, subscriber ids stay never reused: 0010)
    with op.batch_alter_table("subscribers", table_kwargs=KEEP_IDS) as batch:
        batch.add_column(sa.Column("active_since", sa.DateTime(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("keywords", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("keywords")
    with op.batch_alter_table("subscribers", table_kwargs=KEEP_IDS) as batch:
        batch.drop_column("active_since")
    op.drop_index("ix_entry_titles_entry_id", table_name="entry_titles")
    op.drop_table("entry_titles")
