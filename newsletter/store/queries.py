"""Queries shared by every stage: who to plan, which papers an edition considers,
what each subscriber already had."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from newsletter.errors import InputError
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Entry,
    SentEntry,
    Subscriber,
    SubscriberStatus,
)


class SubscriberRow(NamedTuple):
    """One subscriber as planning and ranking need them: a ``NamedTuple`` so the
    fields have names and a million rows still cost what plain tuples do."""

    id: int
    email: str
    name: str
    keywords: str
    # what every link of their email carries (store.tokens): a preview renders from
    # these rows, and its links named no nonce, which the site read as "deleted"
    link_nonce: int | None


def subscriber_rows(session: Any, *, email: str | None = None,
                    unsent_day: dt.date | None = None,
                    slot: Sequence[tuple[str, int]] | None = None,
                    had_day: dt.date | None = None,
                    frequencies: Sequence[str] | None = None,
                    had_within_days: int = 1,
                    active_by: Mapping[tuple[str, int], dt.datetime] | None = None,
                    ) -> Iterator[SubscriberRow]:
    """Active subscribers to plan: none who already has an edition of ``unsent_day``
    (one newsletter day per person, whatever the slot), only those in ``slot``; with
    ``had_day``, only those who had that day's edition (a late day is owed to them;
    ``had_within_days`` > 1: an edition of the days up to it, for people not emailed
    every day); with ``frequencies``, only subscribers of those (``newsletter.frequency``);
    with ``active_by`` (naive UTC, by slot pair), only those active since before that
    time (the send time of a late day: one missed while paused is not owed)."""
    q = select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.keywords,
               Subscriber.link_nonce)
    if email:
        q = q.where(Subscriber.email == email)
    else:
        q = q.where(Subscriber.status == SubscriberStatus.ACTIVE)
    if unsent_day is not None:
        had = select(Delivery.subscriber_id).where(Delivery.day == unsent_day)
        q = q.where(Subscriber.id.not_in(had))
    if had_day is not None:
        q = q.where(Subscriber.id.in_(select(Delivery.subscriber_id).where(
            Delivery.day > had_day - dt.timedelta(days=had_within_days),
            Delivery.day <= had_day)))
    if frequencies is not None:
        q = q.where(Subscriber.frequency.in_(list(frequencies)))
    if slot is not None:
        by = active_by or {}

        def in_pair(tz: str, hour: int) -> Any:
            pair = (Subscriber.tz == tz) & (Subscriber.send_hour == hour)
            since = by.get((tz, hour))
            return pair if since is None else pair & (
                Subscriber.active_since.is_(None) | (Subscriber.active_since <= since))

        q = q.where(or_(false(), *[in_pair(tz, hour) for tz, hour in slot]))
    for row in session.execute(q.order_by(Subscriber.id).execution_options(yield_per=5000)):
        yield SubscriberRow._make(row)


def sent_editions(session: Session, subscriber_id: int, limit: int
                  ) -> list[tuple[Delivery, Edition]]:
    """A subscriber's sent deliveries with their editions, newest first (the archive
    page and the Atom feed): by the delivery's own day, which the (subscriber, day)
    index holds in order; ordered by the edition's, SQLite read every row ever sent
    to anyone (0.4 s at 1.1 million), then sorted."""
    rows = session.execute(select(Delivery, Edition).join(Edition)
                           .where(Delivery.subscriber_id == subscriber_id,
                                  Delivery.status == DeliveryStatus.SENT)
                           .order_by(Delivery.day.desc(), Delivery.id.desc()).limit(limit))
    return [(d, e) for d, e in rows]


def candidate_entries(session: Session, *, since: dt.datetime | None,
                      until: dt.datetime | None = None) -> list[Entry]:
    q = select(Entry)
    if since is not None:
        q = q.where(Entry.arrived_at > since)
    if until is not None:
        q = q.where(Entry.arrived_at <= until)
    return list(session.scalars(q.order_by(Entry.arrived_at, Entry.id)))


FIRST_OF_SLOT_LOOKBACK = dt.timedelta(days=1)
# A slot whose own last edition is older than this starts where the last day ended
# instead (``edition_entries``): one last used months ago (a daylight-saving change).
# A slot run late, a day missed and sent late, a scheduler down for days keep their
# own edition: another slot's edition between the two took their papers.
STALE_SLOT = dt.timedelta(days=8)


def edition_entries(session: Session, slot: str, cutoff: dt.datetime,
                    day: dt.date | None = None) -> list[Entry]:
    """Papers that arrived after the previous edition of ``slot``, up to ``cutoff``: an
    edition's candidates, or (with ``cutoff`` now) what the next edition would take.

    With ``day`` (the edition's), the previous edition is the newest of an earlier day:
    a missed day sent late, after the next day's edition (`send --date` of Friday run
    on Saturday), took only the papers since Saturday's, so Friday's reached no weekdays
    reader (their Monday window starts at the late Friday's cutoff).

    A slot with no edition of its own in eight days starts where the newest edition of
    any slot a day or more before it ended. The first edition of a slot: hourly slots
    begun after weeks of plain `send` (or a plain `send` after slots) offered every
    paper ever stored as "new papers for you". A slot whose last edition is months old:
    a newsletter in one time zone changes slot at each daylight-saving change (07:00 in
    London is 07 UTC in winter, 06 in summer), and the slot last used in October offered
    every paper since October in March, months-old ones crowding out the day's (which
    the next window then left behind). The readers had their last email from the other
    slot a day before; papers of that day they had are left out per reader. With no
    edition at all, every paper is a candidate (the first day)."""
    earlier = (Edition.day < day,) if day is not None else ()
    prev = session.scalar(select(Edition.cutoff)
                          .where(Edition.slot == slot, Edition.cutoff < cutoff, *earlier)
                          .order_by(Edition.cutoff.desc()).limit(1))
    if prev is None or prev < cutoff - STALE_SLOT:
        day_before = session.scalar(select(Edition.cutoff)
                                    .where(Edition.cutoff <= cutoff - FIRST_OF_SLOT_LOOKBACK)
                                    .order_by(Edition.cutoff.desc()).limit(1))
        if prev is None or (day_before is not None and day_before > prev):
            prev = day_before
    return candidate_entries(session, since=prev, until=cutoff)


def sent_map(session: Session, entries: Sequence[Entry]) -> dict[int, list[int]]:
    """subscriber id → indices (into ``entries``) of papers already sent to them.

    Read edition by edition: an edition sends only papers that arrived by its cutoff
    (every window it ranks ends there, and a cutoff only ever moves later), so only
    the editions whose cutoff is at or after the earliest arrival here can have sent
    one. Their rows come from the ``(edition_id, subscriber_id, entry_id)`` index,
    which a send extends at its end; read by paper instead, every paper ever sent to
    anyone was scanned (0.6 s at 4 million), and an index by paper, written all over
    at each send, cost 65 µs a message (a twentieth of delivering one)."""
    if not entries:
        return {}
    position = {e.id: i for i, e in enumerate(entries)}
    editions = select(Edition.id).where(Edition.cutoff >= min(e.arrived_at for e in entries))
    out: dict[int, list[int]] = defaultdict(list)
    ids = list(position)
    for start in range(0, len(ids), 900):
        rows = session.execute(
            select(SentEntry.subscriber_id, SentEntry.entry_id).where(
                SentEntry.edition_id.in_(editions), SentEntry.entry_id.in_(ids[start:start + 900])))
        for sub_id, entry_id in rows:
            out[sub_id].append(position[entry_id])
    return out


def newest_entries(session: Session, limit: int = 0,
                   until: dt.datetime | None = None) -> list[Entry]:
    """Stored papers, newest arrivals first (``limit`` 0: all), those arrived by
    ``until`` only when it is given."""
    q = select(Entry).order_by(Entry.arrived_at.desc(), Entry.upvotes.desc(), Entry.id)
    if until is not None:
        q = q.where(Entry.arrived_at <= until)
    return list(session.scalars(q.limit(limit) if limit else q))


def all_subscribers(session: Session) -> list[Subscriber]:
    return list(session.scalars(select(Subscriber).order_by(Subscriber.id)))


def find_edition(session: Session, *, edition_id: int | None = None,
                 day: dt.date | None = None) -> Edition | None:
    """An edition by id, else the latest of ``day``, else the latest of all."""
    q = select(Edition)
    if edition_id is not None:
        q = q.where(Edition.id == edition_id)
    elif day is not None:
        q = q.where(Edition.day == day)
    return session.scalars(q.order_by(Edition.created_at.desc()).limit(1)).first()


def entry_dict(e: Entry) -> dict[str, Any]:
    """A paper as our own JSON entry format (what ``entries --json`` prints and
    ``ingest`` reads back)."""
    return {
        "id": e.id,
        "title": e.title,
        "abstract": e.abstract,
        "authors": e.authors,
        "published": e.published.isoformat() if e.published else None,
        "upvotes": e.upvotes,
        "url": e.url,
        "code_url": e.code_url,
        "project_url": e.project_url,
        "keywords": e.keywords,
        "version": e.version,
        "source": e.source,
        "featured": e.featured.isoformat() if e.featured else None,
        "affiliations": e.affiliations or {},
    }


def parse_day(value: str | None, field: str = "--date",
              expected: str = "YYYY-MM-DD") -> dt.date:
    """A newsletter day as an operator types it (YYYY-MM-DD); empty means today (UTC).
    ``expected`` is what the error says the field takes, where it takes more than a day
    (an edition's id or its day)."""
    if not value:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{field}: expected {expected}, got {value!r}") from None
