"""Three questions each run asks, answered by an index whatever the history: who had
a day's edition (``deliveries (day, subscriber_id)``), who was already sent a paper
(``sent_entries (edition_id, subscriber_id, entry_id)``, read for the editions that
can have sent the papers asked about: ``queries.sent_map``) and what went out in the
last hour (``deliveries (sent_at)``, for an hourly rate limit).

Planning asks "every active subscriber without a delivery of this day" (and, for a
late day, "with one of the days before") several times a run, every hourly slot,
and opening an edition asks who already had each of its papers. The only indexes
naming ``day`` and ``entry_id`` began with the subscriber, so each question read
every delivery, or every paper ever sent to anyone: 0.1 s at 1.5 million deliveries
and 0.6 s at 4 million sent papers (4,000 readers for a year, and for a hundred
days), growing with every day sent. An index by paper would serve the second, but a
send writes it all over (65 µs a message); this one a send extends at its end. The
last hour's sends were found among every sent delivery by status, each then read for
its time: 0.5 s at 1.5 million.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_delivery_day_subscriber", "deliveries", ["day", "subscriber_id"])
    op.create_index("ix_sent_entries_edition", "sent_entries",
                    ["edition_id", "subscriber_id", "entry_id"])
    op.create_index("ix_delivery_sent_at", "deliveries", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_sent_at", table_name="deliveries")
    op.drop_index("ix_sent_entries_edition", table_name="sent_entries")
    op.drop_index("ix_delivery_day_subscriber", table_name="deliveries")
