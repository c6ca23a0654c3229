"""One subscriber's email: as "view in browser" shows it, and what a reader was sent
(their archive and Atom feed).

``render_email`` is the one function "view in browser" calls: it renders a stored
edition's email from the delivery row (the papers it carried), or, for a preview's
link (edition 0), the email the next edition would make now. Send, the previews and
the worker render the same way, through ``EditionContext.render`` inside delivery.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from newsletter.delivery import shown
from newsletter.delivery.edition import EditionConfig
from newsletter.delivery.plan import Job, plan_now
from newsletter.frequency import kind_on
from newsletter.render.renderer import Recipient, Rendered
from newsletter.service.editions import ONCE, EditionCache
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Edition, Entry, Subscriber, utcnow
from newsletter.store.queries import sent_editions as stored_editions


def _papers(session: Any, ids: list[str]) -> list[Entry]:
    return list(session.scalars(select(Entry).where(Entry.id.in_(ids))))


def render_email(config: EditionConfig, engine: Engine, subscriber_id: int,
                 edition_id: int, *, cache: EditionCache = ONCE) -> Rendered | None:
    """``subscriber_id``'s email of ``edition_id``, or None when there is none (no such
    subscriber; a stored edition they were not part of; a preview with nothing to send).

    A stored edition renders the email as it was sent, from the row's record of what
    it showed (the picks, sections, explanations and the keywords it was sent for);
    a row sent before records were kept renders the papers it carried. Either is
    opened with exactly those papers when the edition's candidates no longer hold
    them all.
    Edition 0, or one not stored, is a preview's link: the next edition as it would
    be made now."""
    with session_scope(engine, readonly=True) as s:
        sub = s.get(Subscriber, subscriber_id)
        if sub is None:
            return None
        edition = s.get(Edition, edition_id) if edition_id else None
        if edition is not None:
            row = s.scalar(select(Delivery).where(Delivery.edition_id == edition_id,
                                                  Delivery.subscriber_id == subscriber_id))
            if row is None:
                return None  # a real edition this subscriber was not part of
            ctx = cache.open(config, s, edition)
            record = shown.decode(row.shown)
            if record is not None:  # the email as it was sent
                if not ctx.ranks(record.entry_ids):
                    ctx = cache.open(config, s, edition, rows=_papers(s, record.entry_ids))
                return ctx.render_shown(Recipient(sub.id, sub.email, sub.name, sub.keywords,
                                                  sub.link_nonce), record, row.day)
            if not ctx.has(row.entry_ids):  # papers changed since
                ctx = cache.open(config, s, edition, rows=_papers(s, row.entry_ids))
            return ctx.render(Job.of(row, sub))
        unsaved = Edition(id=0, day=dt.date.today(), slot="", cutoff=utcnow())
        # a weekly subscriber's next email is the week's best, a weekdays one's after the
        # weekend has the weekend's papers too, as ``send`` would make them
        weekly, gap = kind_on(sub.frequency, unsaved.day)
        ctx = cache.open(config, s, unsaved, gap=gap)
        selection, _ = ctx.selection_for(weekly, gap)
        if selection is None:  # that window holds nothing here: the day's papers
            selection, weekly, gap = ctx.selection, False, False
        jobs = plan_now(selection,
                        [Recipient(sub.id, sub.email, sub.name, sub.keywords,
                                   sub.link_nonce)],  # the page's links are theirs
                        config.ranking.max_papers, weekly=weekly, gap=gap)
        if not jobs or not jobs[0].entry_ids:
            return None
        return ctx.render(jobs[0])


def sent_editions(engine: Engine, subscriber_id: int, limit: int = 100
                  ) -> tuple[Subscriber | None, list[tuple[Delivery, Edition]]]:
    """The subscriber and their sent deliveries with editions, newest first."""
    with session_scope(engine, readonly=True) as s:
        return s.get(Subscriber, subscriber_id), stored_editions(s, subscriber_id, limit)


@dataclass(frozen=True)
class SentPaper:
    """One paper a sent email carried: when it was sent and what the email said of it
    ("matched: ...", from the email's record; "" for one sent before records were
    kept). ``entry`` is None for a paper no longer stored."""

    entry: Entry | None
    when: dt.datetime
    why: str = ""


def sent_papers(engine: Engine, subscriber_id: int, *, editions: int = 60, most: int = 200
                ) -> tuple[Subscriber | None, list[SentPaper]]:
    """The papers the subscriber's last ``editions`` sent emails carried, newest first
    (at most ``most``): their Atom feed."""
    with session_scope(engine, readonly=True) as s:
        sub = s.get(Subscriber, subscriber_id)
        if sub is None:
            return None, []
        picked: list[tuple[str, dt.datetime]] = []
        why: dict[str, str] = {}  # what the email said of each pick (its record)
        for delivery, edition in stored_editions(s, subscriber_id, editions):
            when = delivery.sent_at or edition.created_at
            picked.extend((eid, when) for eid in delivery.entry_ids)
            record = shown.decode(delivery.shown)
            if record is not None:
                for eid in record.entry_ids:
                    why.setdefault(eid, record.why(eid))
        picked = picked[:most]
        ids = [eid for eid, _ in picked]
        entries = {e.id: e for e in s.scalars(select(Entry).where(Entry.id.in_(ids)))} \
            if ids else {}
    return sub, [SentPaper(entries.get(eid), when, why.get(eid, "")) for eid, when in picked]
