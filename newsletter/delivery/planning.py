"""Who an edition is planned for: the slot groups of one run (everyone, or the
(tz, hour) pairs whose local send time has passed), the true reason when there is
nobody or nothing to plan, and the edition window reopened when it held no papers.
The editions use case (``newsletter.service.editions``) composes these."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select, update

from newsletter.delivery.slots import due_by_day, late_by_day, local_send_time, slot_moment
from newsletter.errors import InputError
from newsletter.frequency import (
    DAILY,
    GAP_DAYS,
    WEEK_DAYS,
    WEEKDAYS,
    WEEKLY,
    after_gap,
    due_on,
    is_weekly,
)
from newsletter.render.renderer import Recipient
from newsletter.store.db import hold_papers_clock, session_scope
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Entry,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.store.queries import candidate_entries, edition_entries, subscriber_rows


def check_slot(slot: str) -> str:
    """``--slot`` as two digits, or "" for everyone; a clear error otherwise."""
    if slot and not (slot.isascii() and slot.isdigit() and 0 <= int(slot) <= 23):
        raise InputError(f"--slot: expected a UTC hour 00-23, got {slot!r}")
    return f"{int(slot):02d}" if slot else ""


def no_new_papers(session: Any, slot: str, this: Edition | None = None) -> str:
    """The true reason an edition has nothing to offer; ``this``: the edition being
    planned, which is not "the last edition" it names."""
    if not session.scalar(select(func.count()).select_from(Entry)):
        return "no papers stored yet; run `newsletter ingest` first (the day stays open)"
    q = select(Edition.day).where(Edition.slot == slot)
    if this is not None:
        q = q.where(Edition.id != this.id)
    last = session.scalar(q.order_by(Edition.cutoff.desc()).limit(1))
    since = f" on {last}" if last else ""
    return (f"no new papers since the last edition{since}; run `newsletter ingest` "
            "(the day stays open for papers that arrive later)")


def reopen_if_empty(engine: Engine, edition: Edition, slot: str) -> Edition:
    """An edition that planned nobody because its window held no papers (created by
    an older version, or in a race) moves its cutoff to now, so papers ingested since
    count for it: a day is never locked at zero papers. One that holds rows keeps its
    cutoff, even when only wider windows' emails were planned (a weekly reader's day, a
    weekdays reader's Monday, before the day's papers came): those rows were ranked up
    to it, and the papers after it are theirs in the next edition."""
    with session_scope(engine) as s:
        if holds_rows(s, edition) or edition_entries(s, slot, edition.cutoff, edition.day):
            return edition
        hold_papers_clock(s, exclusive=True)  # (see ``get_or_create_edition``)
        # Asked again under the lock (another host may have planned meanwhile), and
        # the cutoff only ever moves later: a host whose clock is behind must not take
        # it back below papers another already sent in it (``queries.sent_map`` reads
        # an edition's papers as those that arrived by its cutoff).
        if holds_rows(s, edition):
            return s.get(Edition, edition.id) or edition
        now = utcnow()
        s.execute(update(Edition).where(Edition.id == edition.id).values(
            cutoff=case((Edition.cutoff < now, now), else_=Edition.cutoff)))
        return s.get(Edition, edition.id) or edition


def pending_count(session: Any, edition: Edition) -> int:
    """Rows of ``edition`` waiting to be sent."""
    return int(session.scalar(select(func.count()).select_from(Delivery).where(
        Delivery.edition_id == edition.id, Delivery.status == DeliveryStatus.PENDING)) or 0)


@dataclass(frozen=True)
class Group:
    """Who one run plans for one newsletter day: everyone (``pairs`` None) or the
    (tz, hour) pairs due; a late previous day (``late``) only for people who had the
    day before it."""

    day: dt.date
    pairs: list[tuple[str, int]] | None
    late: bool = False

    def recipients(self, session: Any, weekly: bool = False, gap: bool = False
                   ) -> Iterator[Recipient]:
        """The daily and weekdays subscribers due on this day, or (``weekly``) those
        whose weekly email falls on it, or (``gap``) the weekdays subscribers whose
        email of this day follows days without one (``frequency.after_gap``: ranked
        over the papers since their last, not the day's); a late day is owed to those
        who had their last one (the day before, or within a week for those not emailed
        daily). The day's subscribers leave out the ``gap`` ones."""
        due = [f for f in due_on(self.day) if is_weekly(f) == weekly]
        if not weekly:
            spaced = after_gap(self.day)
            due = [f for f in due if (f == WEEKDAYS and spaced) == gap]
        had = self.day - dt.timedelta(days=1) if self.late else None
        # late: only for who was active when the day's send time came (not paused,
        # not unsubscribed then): a day missed while paused is not theirs
        by = ({(tz, h): local_send_time(self.day, h, tz).replace(tzinfo=None)
               for tz, h in self.pairs} if self.late and self.pairs else None)
        daily = [f for f in due if f == DAILY]
        rows = (subscriber_rows(session, unsent_day=self.day, slot=self.pairs, had_day=had,
                                frequencies=daily, active_by=by) if daily else iter(()))
        spaced_due = [f for f in due if f != DAILY]
        more = subscriber_rows(session, unsent_day=self.day, slot=self.pairs, had_day=had,
                               frequencies=spaced_due, had_within_days=WEEK_DAYS + 1,
                               active_by=by)
        for row in itertools.chain(rows, more) if spaced_due else rows:
            yield Recipient(*row)


KINDS = ((False, False), (False, True), (True, False))  # (weekly, gap): the day's, a
# weekdays Monday's (the papers since Friday), the week's


def groups(session: Any, day: dt.date, slot: str, catch_up_hours: int = 0) -> list[Group]:
    """The groups to plan in this run (see ``slots``)."""
    if not slot:
        return [Group(day, None)]
    pairs = [(tz, h) for tz, h in session.execute(
        select(Subscriber.tz, Subscriber.send_hour).distinct()
        .where(Subscriber.status == SubscriberStatus.ACTIVE)).all()]
    moment = slot_moment(day, int(slot))
    late = late_by_day(moment, pairs, dt.timedelta(hours=catch_up_hours))
    due = due_by_day(moment, pairs)
    return ([Group(d, late[d], late=True) for d in sorted(late)]
            + [Group(d, due[d]) for d in sorted(due)])


def anyone_to_plan(session: Any, planned: list[Group]) -> bool:
    """Whether this run would plan anyone (cheap: no ranking, no templates)."""
    return any(next(iter(g.recipients(session, weekly, gap)), None) is not None
               for g in planned for weekly, gap in KINDS)


def weekly_due(session: Any, planned: list[Group], day: dt.date, slot: str) -> bool:
    """Whether someone's weekly email falls in this run (of ``slot`` on ``day``) while
    the week held papers: a day without new papers (a weekend, for arXiv) is still a
    weekly subscriber's day."""
    return (any(next(iter(g.recipients(session, True)), None) is not None for g in planned)
            and window_had_papers(session, slot, day, WEEK_DAYS))


def gap_due(session: Any, planned: list[Group], day: dt.date, slot: str) -> bool:
    """Whether a weekdays subscriber's email after the weekend falls in this run while
    those days held papers: a Monday without new papers is still theirs."""
    return (gap_planned(session, planned)
            and window_had_papers(session, slot, day, GAP_DAYS))


def has_gap(session: Any, edition: Edition) -> bool:
    """Whether rows of the edition that may still be sent were ranked over a weekdays
    reader's papers after the weekend (``gap``): a worker, a retry or the next run
    then renders them over the same papers. Only an edition that can reach a local
    Monday can hold them (its own day; a slot's edition of UTC day D also reaches
    D-1 and D+1, and its late groups the day before those)."""
    if edition.day.weekday() not in ((6, 0, 1, 2) if edition.slot else (0,)):
        return False
    return holds_unsent(session, edition, "gap")


# A row that may still be sent: a failed one too (a transient failure is put back by
# the next run or the console's retry, and a delivery already running claims it).
UNSENT = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEFERRED,
          DeliveryStatus.FAILED)


def holds_rows(session: Any, edition: Edition) -> bool:
    """Whether anyone was planned in the edition, whatever became of their row."""
    return session.scalar(select(Delivery.id).where(
        Delivery.edition_id == edition.id).limit(1)) is not None


def holds_unsent(session: Any, edition: Edition, kind: str) -> bool:
    """Whether the edition holds rows of ``kind`` (details "gap" or "weekly") that may
    still be sent: they render over their own wider window, whoever opens it now."""
    return bool(edition.id) and session.scalar(select(Delivery.id).where(
        Delivery.edition_id == edition.id, Delivery.status.in_(UNSENT),
        Delivery.details[kind].as_boolean().is_(True)).limit(1)) is not None


def gap_planned(session: Any, planned: list[Group]) -> bool:
    """Whether a weekdays reader's email after the weekend is among the groups: the
    papers since their Friday email are then opened with the edition."""
    return any(next(iter(g.recipients(session, gap=True)), None) is not None
               for g in planned)


def window_had_papers(session: Any, slot: str, day: dt.date, days: int = WEEK_DAYS) -> bool:
    """Whether a paper arrived in the window an edition of ``slot`` on ``day`` opened
    now would rank a weekly email over (``days`` = ``GAP_DAYS``: a weekdays email's
    after the weekend): ``week_entries``'s window, not the last ``days`` days of the
    clock. Counted from the clock, a run later in its hour than the one a week (or the
    Friday) before saw no paper where the window held one, and sent no email: the
    paper was lost to that reader."""
    now = utcnow()
    return session.scalar(select(Entry.id).where(
        Entry.arrived_at > window_since(session, slot, day, days, now, now),
        Entry.arrived_at <= now).limit(1)) is not None


def has_weekly(session: Any) -> bool:
    """Whether anyone receiving chose a weekly email (else no week selection is built)."""
    return session.scalar(select(Subscriber.id).where(
        Subscriber.frequency.like(f"{WEEKLY}%"),
        Subscriber.status == SubscriberStatus.ACTIVE).limit(1)) is not None


def week_entries(session: Any, edition: Edition, days: int = WEEK_DAYS) -> list[Entry]:
    """A weekly email's candidates: the papers that arrived since the same slot's
    edition of a week before, up to the edition's cutoff (``window_since``: a week and
    a day at most). ``days`` = ``GAP_DAYS``: a weekdays email's after the weekend, the
    papers since the same slot's edition of the Friday before (which carried their last
    email), whenever it ran. An edition of those days made after this one (an
    operator's catch-up) starts nothing here."""
    return candidate_entries(session, since=window_since(
        session, edition.slot, edition.day, days, edition.created_at or edition.cutoff,
        edition.cutoff), until=edition.cutoff)


def window_since(session: Any, slot: str, day: dt.date, days: int, made: dt.datetime,
                 cutoff: dt.datetime) -> dt.datetime:
    """Where ``week_entries``'s window starts for an edition of ``slot`` on ``day`` made
    at ``made`` with ``cutoff``: the cutoff of the same slot's edition ``days`` before
    (made before it), at most a week and a day before ``cutoff``. The day is slack for
    a run later in its hour than the one a week before (a daemon started late, a
    catch-up): floored at exactly a week, the papers between the two runs' times were
    in neither week's window. It opens at the first edition of that earlier day when
    that came before the slot's own: the reader's email of that day may have gone out
    in an earlier slot (their own, with this one carrying this email late). What the
    reader already had is left out per reader, so a longer window never sends a paper
    twice."""
    since = session.scalar(select(Edition.cutoff).where(
        Edition.slot == slot, Edition.day <= day - dt.timedelta(days=days),
        Edition.cutoff <= made).order_by(Edition.cutoff.desc()).limit(1))
    if since is not None:
        # The reader's last email may have come from an earlier slot of that day than
        # this one (their own, when this slot carries it late: a daemon down at their
        # hour, a reader resumed that morning): the window opens at that day's first.
        first = session.scalar(select(func.min(Edition.cutoff)).where(
            Edition.day == day - dt.timedelta(days=days), Edition.cutoff <= made))
        if first is not None:
            since = min(since, first)
    floor = cutoff - dt.timedelta(days=WEEK_DAYS + 1)
    return max(since, floor) if since else floor
