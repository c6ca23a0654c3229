"""What the console shows, read from the database: one function per page section.

Reads only. Lists are keyset-paginated (``WHERE id > :after ORDER BY id``), never
``OFFSET``, so page 20,000 of a million subscribers costs what page 1 does, and the
"contains" searches are served by trigram indexes on PostgreSQL (migration 0008).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, or_, select, tuple_
from sqlalchemy.orm import Session

from newsletter.config import SourceConfig
from newsletter.service.ingest import source_fetches
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Entry,
    Event,
    SentEntry,
    SourceRun,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.store.queries import edition_entries

CHART_DAYS = 30
# Bounds on what a URL can ask: a row id past the columns' 32-bit range (PostgreSQL
# ``integer``; SQLite overflows at 64 bits) finds nothing instead of raising, and a
# search longer than any address or title is cut (SQLite refuses LIKE patterns past
# 50,000 bytes: "LIKE or GLOB pattern too complex").
MAX_ID = 2**31 - 1
MAX_QUERY = 200


def page_after(after: int) -> int:
    """A keyset cursor from the URL, within the ids that can exist."""
    return min(max(after, 0), MAX_ID)


def search_text(q: str) -> str:
    return q.strip()[:MAX_QUERY]
SERIES = ("sent", "failed", "bounces", "complaints", "unsubscribes")
_EVENT_SERIES = {"bounced": "bounces", "complained": "complaints",
                 "unsubscribed": "unsubscribes"}


def _day_key(value: Any) -> str:
    """``date()`` is a string on SQLite and a date on PostgreSQL."""
    return value.isoformat() if isinstance(value, dt.date) else str(value)[:10]


# ---- dashboard -----------------------------------------------------------------------


def edition_counts(session: Session, edition_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: {str(k): 0 for k in DeliveryStatus}
                                      for i in edition_ids}
    if edition_ids:
        rows = session.execute(select(Delivery.edition_id, Delivery.status, func.count())
                               .where(Delivery.edition_id.in_(edition_ids))
                               .group_by(Delivery.edition_id, Delivery.status))
        for eid, status, n in rows:
            out[eid][str(status)] = int(n)
    return out


def last_editions(session: Session, n: int = 10) -> list[dict[str, Any]]:
    editions = list(session.scalars(select(Edition).order_by(Edition.day.desc(),
                                                             Edition.id.desc()).limit(n)))
    counts = edition_counts(session, [e.id for e in editions])
    return [{"edition": e, "counts": counts[e.id]} for e in editions]


def daily_series(session: Session, today: dt.date, days: int = CHART_DAYS
                 ) -> tuple[list[dt.date], dict[str, list[int]]]:
    """Per day of the last ``days``: sent, failed, bounces, complaints, unsubscribes."""
    start = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(start, dt.time())
    axis = [start + dt.timedelta(days=i) for i in range(days)]
    index = {d.isoformat(): i for i, d in enumerate(axis)}
    series = {name: [0] * days for name in SERIES}

    def add(name: str, rows: Any) -> None:
        for day, n in rows:
            i = index.get(_day_key(day))
            if i is not None:
                series[name][i] += int(n)

    # Each count read through an index that holds only its days (migration 0015):
    # by status, SQLite read every row ever sent or failed. A message sent counts on
    # the day it went out, whatever its row says since (a bounce).
    sent_day = func.date(Delivery.sent_at)
    add("sent", session.execute(select(sent_day, func.count()).where(
        Delivery.sent_at >= since).group_by(sent_day)))
    # A row fails at the end of its tries, within ``[delivery] retry_hours`` (30 days at
    # most) of its first: the editions made (or reopened: the cutoff) in the chart's
    # days and the 31 before hold the rows failed in them (a past day sent late into an
    # edition of its own too; one added late to an older edition's rows is not counted).
    recent = select(Edition.id).where(Edition.cutoff >= since - dt.timedelta(days=31))
    failed_day = func.date(Delivery.updated_at)
    add("failed", session.execute(select(failed_day, func.count()).where(
        Delivery.edition_id.in_(recent), Delivery.status == DeliveryStatus.FAILED,
        Delivery.updated_at >= since).group_by(failed_day)))
    event_day = func.date(Event.at)
    for kind, name in _EVENT_SERIES.items():
        add(name, session.execute(select(event_day, func.count()).where(
            Event.kind == kind, Event.at >= since).group_by(event_day)))
    return axis, series


@dataclass
class Running:
    edition: Edition
    total: int
    done: int
    counts: dict[str, int]
    per_minute: int  # messages sent in the last minute

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 100


def running_edition(session: Session) -> Running | None:
    """The newest edition with rows still pending or being sent, and its pace."""
    eid = session.scalar(select(Delivery.edition_id).where(
        Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]))
        .order_by(Delivery.edition_id.desc()).limit(1))
    if eid is None:
        return None
    edition = session.get(Edition, eid)
    if edition is None:
        return None
    counts = edition_counts(session, [eid])[eid]
    total = sum(counts.values())
    done = counts["sent"] + counts["failed"] + counts["skipped"]
    minute = utcnow() - dt.timedelta(minutes=1)
    pace = session.scalar(select(func.count()).select_from(Delivery).where(
        Delivery.edition_id == eid, Delivery.status == DeliveryStatus.SENT,
        Delivery.sent_at >= minute)) or 0
    return Running(edition, total, done, counts, int(pace))


def subscriber_counts(session: Session) -> dict[str, int]:
    counts = {str(s): 0 for s in SubscriberStatus}
    for status, n in session.execute(select(Subscriber.status, func.count())
                                     .group_by(Subscriber.status)):
        counts[str(status)] = int(n)
    return counts


def growth(session: Session, today: dt.date, days: int = CHART_DAYS) -> list[int]:
    """New subscribers per day over the last ``days``."""
    start = today - dt.timedelta(days=days - 1)
    out = [0] * days
    created = func.date(Subscriber.created_at)
    for day, n in session.execute(select(created, func.count()).where(
            Subscriber.created_at >= dt.datetime.combine(start, dt.time()))
            .group_by(created)):
        i = (dt.date.fromisoformat(_day_key(day)) - start).days
        if 0 <= i < days:
            out[i] += int(n)
    return out


def sources(configured: Sequence[SourceConfig], session: Session) -> list[dict[str, Any]]:
    """Each ``[[sources]]`` entry with its last conditional fetch."""
    return source_fetches(configured, session)


@dataclass
class IngestRow:
    """One source's last ingest, as the dashboard shows it."""

    name: str
    origin: str
    ran_at: str  # in the schedule's time zone, to the minute
    ok: bool
    new: int
    updated: int
    skipped: int
    unchanged: bool  # the server said 304: nothing fetched
    error: str


def ingest_log(session: Session, tz: str = "UTC", n: int = 50) -> list[IngestRow]:
    """Each source's last ingest (``source_runs``), newest first, its time in ``tz``
    (the operator's ``[schedule] timezone``) like the scheduler's own clock."""
    import zoneinfo

    zone = zoneinfo.ZoneInfo(tz)
    rows = session.scalars(select(SourceRun).order_by(SourceRun.ran_at.desc()).limit(n))
    return [IngestRow(r.name, r.origin,
                      r.ran_at.replace(tzinfo=dt.UTC).astimezone(zone).strftime(
                          "%Y-%m-%d %H:%M"),
                      bool(r.ok), r.new, r.updated, r.skipped, bool(r.not_modified),
                      r.error) for r in rows]


def heartbeats(engine: Engine, session: Session) -> list[dict[str, Any]]:
    """Each ``run`` and ``worker`` process with its state (alive, stopped, silent),
    from the heartbeats they write: the same view as ``newsletter status``."""
    from newsletter.observe.heartbeat import processes

    return [{"process": p["name"], "kind": p["kind"], "state": p["state"],
             "last beat": p["beat_at"], "seconds ago": p["age_seconds"]}
            for p in processes(engine)]


# ---- subscribers ---------------------------------------------------------------------


@dataclass
class Page:
    rows: list[Any]
    next_after: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def find_subscribers(session: Session, *, q: str = "", by: str = "any", status: str = "",
                     after: int = 0, size: int = 50) -> Page:
    stmt = select(Subscriber)
    q, after = search_text(q), page_after(after)
    if q:
        pattern = f"%{q.replace('%', '').replace('_', '')}%"
        if by == "keyword":
            stmt = stmt.where(Subscriber.keywords.ilike(pattern))
        elif by == "address":
            stmt = stmt.where(Subscriber.email.ilike(pattern))
        else:  # "any", the default: an operator types a name or a topic as often as an address
            stmt = stmt.where(or_(Subscriber.email.ilike(pattern),
                                  Subscriber.name.ilike(pattern),
                                  Subscriber.keywords.ilike(pattern)))
    if status:
        stmt = stmt.where(Subscriber.status == status)
    if after:
        stmt = stmt.where(Subscriber.id > after)
    rows = list(session.scalars(stmt.order_by(Subscriber.id).limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    return Page(rows, str(rows[-1].id) if more else None)


def subscriber_history(session: Session, sub_id: int) -> tuple[list[Any], list[Event]]:
    deliveries = session.execute(
        select(Delivery, Edition).join(Edition, Edition.id == Delivery.edition_id)
        .where(Delivery.subscriber_id == sub_id)
        .order_by(Edition.day.desc(), Delivery.id.desc()).limit(100)).all()
    events = list(session.scalars(select(Event).where(Event.subscriber_id == sub_id)
                                  .order_by(Event.at.desc(), Event.id.desc()).limit(100)))
    return [tuple(r) for r in deliveries], events


# ---- editions ------------------------------------------------------------------------


def ledger_rows(session: Session, edition_id: int, *, state: str = "", after: int = 0,
                size: int = 50) -> Page:
    stmt = (select(Delivery, Subscriber.email)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == edition_id))
    if state:
        stmt = stmt.where(Delivery.status == state)
    after = page_after(after)
    if after:
        stmt = stmt.where(Delivery.id > after)
    rows = [(d, email) for d, email in session.execute(stmt.order_by(Delivery.id)
                                                         .limit(size + 1))]
    more = len(rows) > size
    rows = rows[:size]
    return Page(list(rows), str(rows[-1][0].id) if more else None)


def offered_papers(session: Session, edition: Edition) -> list[tuple[Entry, int]]:
    """The edition's candidate papers, each with how many subscribers were sent it."""
    entries = edition_entries(session, edition.slot, edition.cutoff, edition.day)
    sent = dict(session.execute(select(SentEntry.entry_id, func.count())
                                .where(SentEntry.edition_id == edition.id)
                                .group_by(SentEntry.entry_id)).all())
    pairs = [(e, int(sent.get(e.id, 0))) for e in entries]
    pairs.sort(key=lambda p: (-p[1], -(p[0].upvotes or 0)))
    return pairs


# ---- papers --------------------------------------------------------------------------


def find_papers(session: Session, *, q: str = "", after: str = "", size: int = 50) -> Page:
    stmt = select(Entry)
    q = search_text(q)
    if q:
        pattern = f"%{q.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(or_(Entry.title.ilike(pattern), Entry.id == q))
    if after:
        stamp, _, ident = after.partition("|")
        try:
            at = dt.datetime.fromisoformat(stamp)
        except ValueError:
            at = None
        if at is not None:
            stmt = stmt.where(tuple_(Entry.arrived_at, Entry.id) < tuple_(at, ident))
    rows = list(session.scalars(stmt.order_by(Entry.arrived_at.desc(), Entry.id.desc())
                                .limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    return Page(rows, f"{rows[-1].arrived_at.isoformat()}|{rows[-1].id}" if more else None)
