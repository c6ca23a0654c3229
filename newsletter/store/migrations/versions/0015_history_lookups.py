"""What each run, each bounce and each console page asks, answered by an index
whatever the history:

* who had a day's edition: ``deliveries (day, subscriber_id)``. Planning asks "every
  active subscriber without a delivery of this day" (and, for a late day, "with one
  of the days before") several times a run, every hourly slot; the only index naming
  ``day`` began with the subscriber, so each question read every delivery (0.1 s at
  1.5 million, growing every day sent).
* who was already sent a paper: ``sent_entries (edition_id, subscriber_id,
  entry_id)``, read for the editions that can have sent the papers asked about
  (``queries.sent_map``), where every paper ever sent to anyone was read (0.6 s at 4
  million). An index by paper would serve as well, but a send writes it all over (65
  µs a message); this one a send extends at its end. The console's edition page
  counts its papers from it too (2 s at 3.7 million, read whole).
* what went out in the last hour (an hourly rate limit) and a day (the console's
  chart): ``deliveries (sent_at)``, where every sent delivery was read by status
  (0.5 s at 1.5 million).
* which delivery a bounce or a provider's notice is about: ``deliveries
  (message_id)``, where each notice read every delivery (0.35-0.6 s; a webhook
  carries up to 1,000).
* a kind of event a day, the console's charts: ``events (kind, at)`` (0.1 s each of
  three at a million events).
* the papers' newest change, which keys the web's kept rankings of the recent papers
  (``service.ranking.papers_version``, asked at each preferences page and vote):
  ``entries (updated_at)``, where the papers were counted and read whole.

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
    op.create_index("ix_delivery_message_id", "deliveries", ["message_id"])
    op.create_index("ix_events_kind_at", "events", ["kind", "at"])
    op.create_index("ix_entries_updated_at", "entries", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_entries_updated_at", table_name="entries")
    op.drop_index("ix_events_kind_at", table_name="events")
    op.drop_index("ix_delivery_message_id", table_name="deliveries")
    op.drop_index("ix_delivery_sent_at", table_name="deliveries")
    op.drop_index("ix_sent_entries_edition", table_name="sent_entries")
    op.drop_index("ix_delivery_day_subscriber", table_name="deliveries")
