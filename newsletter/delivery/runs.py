"""The operator's runs: ``send`` (plan + deliver through the ledger) and ``preview``
(the same pipeline with a memory ledger and a file transport; writes nothing to
the database)."""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, inspect, select, update
from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.delivery.deliver import DeliverReport, deliver, run_async
from newsletter.delivery.edition import EditionContext, get_or_create_edition, open_edition
from newsletter.delivery.ledger import DbLedger, MemoryLedger, Outcome
from newsletter.delivery.plan import PlanReport, plan_jobs
from newsletter.delivery.shutdown import Shutdown
from newsletter.delivery.slots import due_by_day, late_by_day, slot_moment
from newsletter.errors import InputError
from newsletter.frequency import DAILY, WEEK_DAYS, due_on, is_weekly
from newsletter.render.mime import Message
from newsletter.store.db import MIGRATIONS, READONLY, session_scope
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Entry,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.store.queries import edition_entries, subscriber_rows
from newsletter.transports import Transport, make_transport
from newsletter.transports.outbox import SAFE_NAME, OutboxTransport


@dataclass
class SendSummary:
    edition: Edition | None  # None: nothing was planned (see ``note``)
    candidates: int
    plan: PlanReport
    reclaimed: int
    report: DeliverReport
    note: str = ""  # why nothing was planned, when nothing was


@dataclass
class Planned:
    edition: Edition | None
    ledger: DbLedger | None
    context: EditionContext | None
    plan: PlanReport
    reclaimed: int
    candidates: int
    pending: int
    note: str = ""


def _check_slot(slot: str) -> str:
    if slot and not (slot.isdigit() and 0 <= int(slot) <= 23):
        raise InputError(f"--slot: expected a UTC hour 00-23, got {slot!r}")
    return f"{int(slot):02d}" if slot else ""


def no_new_papers(session: Any, slot: str) -> str:
    """The true reason an edition has nothing to offer."""
    if not session.scalar(select(func.count()).select_from(Entry)):
        return "no papers stored yet; run `newsletter ingest` first (the day stays open)"
    last = session.scalar(select(Edition.day).where(Edition.slot == slot)
                          .order_by(Edition.cutoff.desc()).limit(1))
    since = f" on {last}" if last else ""
    return (f"no new papers since the last edition{since}; run `newsletter ingest` "
            "(the day stays open for papers that arrive later)")


def _reopen_if_empty(engine: Engine, edition: Edition, slot: str) -> Edition:
    """An edition that planned nobody because its window held no papers (created by
    an older version, or in a race) moves its cutoff to now, so papers ingested since
    count for it: a day is never locked at zero papers."""
    with session_scope(engine) as s:
        has_rows = s.scalar(select(func.count()).select_from(Delivery)
                            .where(Delivery.edition_id == edition.id))
        if has_rows or edition_entries(s, slot, edition.cutoff):
            return edition
        s.execute(update(Edition).where(Edition.id == edition.id).values(cutoff=utcnow()))
        return s.get(Edition, edition.id) or edition


@dataclass(frozen=True)
class _Group:
    """Who one run plans for one newsletter day: everyone (``pairs`` None) or the
    (tz, hour) pairs due; a late previous day (``late``) only for people who had the
    day before it."""

    day: dt.date
    pairs: list[tuple[str, int]] | None
    late: bool = False

    def rows(self, session: Any, weekly: bool = False) -> Iterator[tuple[int, str, str, str]]:
        """The daily and weekdays subscribers due on this day, or (``weekly``) those
        whose weekly email falls on it; a late day is owed to those who had their
        last one (the day before, or within a week for those not emailed daily)."""
        due = [f for f in due_on(self.day) if is_weekly(f) == weekly]
        had = self.day - dt.timedelta(days=1) if self.late else None
        rows = subscriber_rows(session, unsent_day=self.day, slot=self.pairs, had_day=had,
                               frequencies=[f for f in due if f == DAILY])
        spaced = [f for f in due if f != DAILY]
        more = subscriber_rows(session, unsent_day=self.day, slot=self.pairs, had_day=had,
                               frequencies=spaced, had_within_days=WEEK_DAYS + 1)
        return itertools.chain(rows, more) if spaced else rows


def _groups(session: Any, day: dt.date, slot: str, catch_up_hours: int = 0) -> list[_Group]:
    """The groups to plan in this run (see ``slots``)."""
    if not slot:
        return [_Group(day, None)]
    pairs = [(tz, h) for tz, h in session.execute(
        select(Subscriber.tz, Subscriber.send_hour).distinct()
        .where(Subscriber.status == SubscriberStatus.ACTIVE)).all()]
    moment = slot_moment(day, int(slot))
    late = late_by_day(moment, pairs, dt.timedelta(hours=catch_up_hours))
    due = due_by_day(moment, pairs)
    return ([_Group(d, late[d], late=True) for d in sorted(late)]
            + [_Group(d, due[d]) for d in sorted(due)])


def _anyone_to_plan(session: Any, groups: list[_Group]) -> bool:
    """Whether this run would plan anyone (cheap: no ranking, no templates)."""
    return any(next(iter(g.rows(session, weekly)), None) is not None
               for g in groups for weekly in (False, True))


def plan_edition(settings: Settings, engine: Engine, day: dt.date, slot: str = "") -> Planned:
    """Create (or find) the edition, take back unfinished rows, and plan everyone not yet
    planned. Safe to repeat: a second call plans only who is new.

    Without a slot, everyone active who has no row for ``day`` is planned for ``day``.
    With a slot (a UTC hour on ``day``), everyone whose local send time has passed on
    their local day and who has no row for that local day (see ``slots``). Either way
    the unique (subscriber, day) key decides, so overlapping runs send once. A run
    with nobody to plan and nothing left to deliver opens no edition (no ranking, no
    template compiling), which is most hourly slots."""
    slot = _check_slot(slot)
    with session_scope(engine, readonly=True) as s:
        existing = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == slot))
        groups = _groups(s, day, slot, settings.schedule.catch_up_hours)
        due = _anyone_to_plan(s, groups)
        if existing is None and not edition_entries(s, slot, utcnow()):
            return Planned(None, None, None, PlanReport(), 0, 0, 0, no_new_papers(s, slot))
        if existing is None and not due:
            return Planned(None, None, None, PlanReport(), 0, 0, 0,
                           f"nobody is due{f' in slot {slot}' if slot else ''}: every "
                           "active subscriber due has had that day's edition")
    edition = get_or_create_edition(engine, day, slot)
    edition = _reopen_if_empty(engine, edition, slot)
    ledger = DbLedger(engine, edition)
    reclaimed = ledger.reclaim() + ledger.retry_failed()
    plan = PlanReport()
    note = ""
    with session_scope(engine, readonly=True) as s:
        waiting = s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition.id, Delivery.status == DeliveryStatus.PENDING)) or 0
        if not due and not waiting:
            return Planned(edition, ledger, None, plan, reclaimed, 0, 0,
                           "nobody new to plan and nothing left to deliver")
        ctx = open_edition(settings, s, edition)
        rows = ctx.rows
        k = settings.ranking.max_papers
        empty = ("no paper matched the profile (trending section off)"
                 if settings.ranking.trending == "none" or not settings.ranking.trending_count
                 else "every candidate paper was already sent to them")
        if not rows:
            note = no_new_papers(s, slot)
        else:
            for group, weekly in itertools.product(groups, (False, True)):
                selection = ctx.week_selection if weekly else ctx.selection
                if selection is None:
                    continue
                part = ledger.plan(plan_jobs(selection, group.rows(s, weekly), k,
                                             day=group.day, weekly=weekly),
                                   empty_reason=empty)
                plan.planned += part.planned
                plan.skipped += part.skipped
                plan.already += part.already
    with session_scope(engine, readonly=True) as s:
        pending = s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition.id, Delivery.status == DeliveryStatus.PENDING)) or 0
    return Planned(edition, ledger, ctx, plan, reclaimed, len(rows), int(pending), note)


def run_send(settings: Settings, engine: Engine, day: dt.date, *, slot: str = "",
             transport: Transport | None = None,
             on_progress: Callable[[Outcome], None] | None = None,
             on_planned: Callable[[int], None] | None = None,
             shutdown: Shutdown | None = None) -> SendSummary:
    """Plan, then deliver. The transport is made (and its configuration checked)
    before anything is written, so a missing API key fails with no ledger rows."""
    transport = transport or make_transport(settings)
    p = plan_edition(settings, engine, day, slot)
    if on_planned:
        on_planned(p.pending)
    if p.edition is None or p.ledger is None or p.context is None:
        return SendSummary(p.edition, p.candidates, p.plan, p.reclaimed, DeliverReport(),
                           p.note)
    report = run_async(deliver(settings, p.ledger, p.context, transport,
                               on_progress=on_progress, shutdown=shutdown))
    return SendSummary(p.edition, p.candidates, p.plan, p.reclaimed, report, p.note)


class PreviewTransport(OutboxTransport):
    """Files named after the recipient, so an operator can find one person's email."""

    name = "preview"

    def file_for(self, message: Message) -> Path:
        return self.path / f"{SAFE_NAME.sub('_', message.to)}.eml"


@dataclass
class PreviewReport:
    out: Path
    candidates: int
    outcomes: list[Outcome] = field(default_factory=list)
    empty_profiles: int = 0
    screenshots: list[Path] = field(default_factory=list)
    context: EditionContext | None = None  # what ranked and rendered it (the "why")
    note: str = ""  # why nothing would be sent, when nothing would

    def summary(self) -> dict[str, Any]:
        rendered = [o.rendered for o in self.outcomes if o.rendered is not None]
        papers = [r.papers for r in rendered]
        sizes = [len(r.html.encode()) for r in rendered]
        terms: Counter[str] = Counter(t for r in rendered for t in r.matched_terms)

        def spread(values: list[int]) -> dict[str, float]:
            if not values:
                return {"min": 0, "median": 0, "max": 0}
            return {"min": min(values), "median": statistics.median(values),
                    "max": max(values)}

        return {
            "subscribers": len(self.outcomes),
            "candidates": self.candidates,
            "papers_per_email": spread(papers),
            "no_match_trending_only": sum(1 for r in rendered if r.trending and not r.papers),
            "nothing_to_send": sum(1 for o in self.outcomes if o.status == DeliveryStatus.SKIPPED),
            "empty_profiles": self.empty_profiles,
            "html_bytes": spread(sizes),
            "over_gmail_clip": sum(1 for s in sizes if s > 102 * 1024),
            "top_matched_terms": terms.most_common(10),
            "failed": [o.error for o in self.outcomes if o.status == DeliveryStatus.FAILED][:10],
        }


def preview_engine(url: str) -> Engine:
    """An engine that neither creates nor migrates: a SQLite file that is not there
    is an error, not a new empty database (connecting would create the file)."""
    from sqlalchemy.engine import make_url

    from newsletter.store.db import make_engine

    parsed = make_url(url)
    db = parsed.database
    if parsed.get_backend_name() == "sqlite" and db not in (None, "", ":memory:") \
            and not Path(str(db)).exists():
        raise InputError(f"no database yet at {parsed.database}: ingest papers and add "
                             "subscribers first (preview never creates one)")
    return make_engine(url)


def require_database(engine: Engine) -> None:
    """Preview reads; it never creates or migrates a database (nor makes a signing key)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            raise InputError("no database yet: ingest papers and add subscribers first")
        current = set(MigrationContext.configure(conn).get_current_heads())
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if current != set(ScriptDirectory.from_config(cfg).get_heads()):
        raise InputError("the database schema is old: run `newsletter db upgrade` first")


def _due_now(session: Any, day: dt.date, email: str | None
             ) -> dict[bool, list[tuple[int, str, str, str]]]:
    """Who ``send`` for ``day`` would plan now (no slot: everyone due that day who has
    not had it), daily/weekdays apart from weekly; ``email``: only that subscriber,
    whatever their status (an operator previews a paused one too)."""
    if email:
        [(sub_id, address, name, keywords)] = list(subscriber_rows(session, email=email))
        freq = session.get(Subscriber, sub_id).frequency
        had = session.scalar(select(Delivery.id).where(Delivery.subscriber_id == sub_id,
                                                       Delivery.day == day).limit(1))
        due = [] if had is not None or freq not in due_on(day) else [
            (sub_id, address, name, keywords)]
        return {is_weekly(freq): due}
    group = _Group(day, None)
    return {weekly: list(group.rows(session, weekly)) for weekly in (False, True)}


def _nothing_to_send(session: Any, day: dt.date, email: str | None, existing: Edition | None,
                     due: dict[bool, list[Any]]) -> str:
    """What ``send`` would say instead of sending, or "" when it would send."""
    if not any(due.values()):
        who = email or "every active subscriber due"
        return (f"nothing to send for {day}: {who} has had that day's edition or is "
                "not due that day (preview another day with --date)")
    if existing is None and not edition_entries(session, "", utcnow()):
        return f"nothing to send for {day}: {no_new_papers(session, '')}"
    return ""


def run_preview(settings: Settings, engine: Engine, day: dt.date, out: Path, *,
                email: str | None = None, limit: int | None = None,
                recipients: list[tuple[int, str, str, str]] | None = None,
                on_progress: Callable[[Outcome], None] | None = None) -> PreviewReport:
    """``recipients`` (id, email, name, keywords) previews people who need not be
    subscribers: the console's "type any keywords"."""
    require_database(engine)
    with engine.connect().execution_options(**{READONLY: True}) as conn, \
            Session(bind=conn) as s:  # read-only; nothing committed
        existing = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == ""))
        edition = existing or Edition(id=0, day=day, slot="", cutoff=utcnow())
        if recipients is None:
            if email and not list(subscriber_rows(s, email=email)):
                raise InputError(f"{email} is not a subscriber")
            due = _due_now(s, day, email)
            note = _nothing_to_send(s, day, email, existing, due)
            if note:
                conn.rollback()
                return PreviewReport(out, 0, note=note)
        ctx = open_edition(settings, s, edition)
        rows = ctx.rows
        k = settings.ranking.max_papers
        if recipients is not None:
            groups = [(recipients, False)]
        else:
            groups = [(people[:limit] if limit else people, weekly)
                      for weekly, people in due.items()]
        jobs = []
        empty = 0
        for subs, weekly in groups:
            selection = ctx.week_selection if weekly else ctx.selection
            if selection is None or not subs:
                continue
            empty += sum(1 for _, _, _, kw in subs if not kw.strip())
            jobs += [j for chunk in plan_jobs(selection, iter(subs), k, weekly=weekly)
                     for j in chunk]
        if limit:
            jobs = jobs[:limit]
        conn.rollback()
    ledger = MemoryLedger([j for j in jobs if j.entry_ids])
    skipped = [Outcome(j, DeliveryStatus.SKIPPED, error="no papers matched and no trending section")
               for j in jobs if not j.entry_ids]
    out.mkdir(parents=True, exist_ok=True)
    transport = PreviewTransport(out)

    def progress(o: Outcome) -> None:
        if o.rendered is not None:
            stem = str(out / SAFE_NAME.sub("_", o.job.recipient.email))
            Path(stem + ".html").write_text(o.rendered.html, encoding="utf-8")
            Path(stem + ".txt").write_text(o.rendered.text, encoding="utf-8")
        if on_progress:
            on_progress(o)

    run_async(deliver(settings, ledger, ctx, transport, on_progress=progress))
    report = PreviewReport(out, len(rows), ledger.outcomes + skipped, empty, context=ctx)
    return report
