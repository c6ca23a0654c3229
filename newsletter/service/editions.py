"""The editions use cases: open an edition, plan it, deliver it (all of it, or a
worker's share), send (plan + deliver, then the deferred rows of any edition that
are due), retry its failures, abandon it, and an edition's status.

``open_edition`` is the one place an edition is opened (its candidate papers ranked
and its renderer made); everything else here, the previews and "view in browser"
reach it through an ``EditionCache``. Callers (the CLI, the scheduler, the Celery
worker, the console, the web pages) make the transport and the ``EditionConfig``
where they are wired, and call one function of this package.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, case, func, select

from newsletter.collector import fewer_collections
from newsletter.delivery.deliver import DeliverReport, deliver, run_async
from newsletter.delivery.edition import (
    EditionConfig,
    EditionContext,
    EditionPapers,
    get_or_create_edition,
)
from newsletter.delivery.ledger import (
    RELEASED,
    Abandoned,
    DbLedger,
    Outcome,
    abandoned_reason,
    lease_gone,
    not_requeued_due,
    requeued_due,
)
from newsletter.delivery.plan import PlanReport, plan_jobs
from newsletter.delivery.planning import (
    KINDS,
    anyone_to_plan,
    check_slot,
    gap_due,
    gap_planned,
    groups,
    has_gap,
    has_weekly,
    holds_rows,
    holds_unsent,
    no_new_papers,
    pending_count,
    reopen_if_empty,
    week_entries,
    weekly_due,
)
from newsletter.delivery.processes import deliver_in_processes, extra_processes
from newsletter.delivery.shutdown import Shutdown
from newsletter.delivery.status import edition_status
from newsletter.errors import InputError, NewsletterError, SendingStopped
from newsletter.frequency import GAP_DAYS
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import Delivery, DeliveryStatus, Edition, Entry, utcnow
from newsletter.store.queries import edition_entries, find_edition, sent_map
from newsletter.store.votes import vote_history
from newsletter.transports.base import Transport

# ---- opening an edition --------------------------------------------------------------


def open_edition(config: EditionConfig, session: Any, edition: Edition,
                 rows: list[Entry] | None = None, *, ignore_sent: bool = False,
                 gap: bool = False) -> EditionContext:
    """The one way to open an edition: its candidate papers (or ``rows``, e.g. the
    papers one stored email carried) and the context that ranks and renders them.
    ``gap``: weekdays readers after the weekend are planned now, so the papers since
    their Friday email are opened too (as they are for rows of them still to send).

    ``ignore_sent`` skips loading which papers each subscriber already had: only
    planning needs it, and for a delivery worker joining a large edition midway it
    is millions of rows (every paper sent so far) held in memory for nothing."""
    week = after_weekend = None
    if rows is None:
        rows = edition_entries(session, edition.slot, edition.cutoff, edition.day)
        week = (week_entries(session, edition) if has_weekly(session)
                or holds_unsent(session, edition, "weekly") else None)
        if gap or has_gap(session, edition):
            after_weekend = week_entries(session, edition, GAP_DAYS)
    read = EditionPapers(rows, secret_keys(config.web, session), vote_history(session),
                         week=week, gap=after_weekend)
    if not ignore_sent:
        read.sent = sent_map(session, rows)
        read.week_sent = sent_map(session, week) if week else None
        read.gap_sent = sent_map(session, read.gap) if read.gap else None
    return EditionContext(config, edition, read)


class EditionCache:
    """Opened editions, the ``keep`` most recent kept (a long-lived web process renders
    "view in browser" from them); ``keep=0`` keeps none (one run of a command).

    Only a stored edition opened with all its candidates is kept: an unsaved one (a
    preview, id 0) or one opened with given papers is made afresh each time."""

    def __init__(self, keep: int = 0) -> None:
        self.keep = keep
        self._opened: OrderedDict[tuple[int, bool], EditionContext] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, config: EditionConfig, session: Any, edition: Edition, *,
             rows: list[Entry] | None = None, ignore_sent: bool = False,
             gap: bool = False) -> EditionContext:
        key = (edition.id or 0, ignore_sent)
        kept = self.keep and rows is None and edition.id and not gap
        if kept:
            with self._lock:
                ctx = self._opened.get(key)
                if ctx is not None:
                    self._opened.move_to_end(key)
                    return ctx
        ctx = open_edition(config, session, edition, rows, ignore_sent=ignore_sent, gap=gap)
        if kept:
            with self._lock:
                self._opened[key] = ctx
                while len(self._opened) > self.keep:
                    self._opened.popitem(last=False)
        return ctx

    def open_newest(self, config: EditionConfig, engine: Engine) -> None:
        """Open (and keep) the newest edition: done at server start, so the first
        "view in browser" does not pay for it."""
        with session_scope(engine, readonly=True) as s:
            edition = s.scalar(select(Edition).order_by(Edition.id.desc()).limit(1))
            if edition is not None:
                self.open(config, s, edition)


ONCE = EditionCache(0)  # for one run: keeps nothing

# ---- planning ----------------------------------------------------------------------


def clock_at(now: dt.datetime | None) -> Callable[[], dt.datetime]:
    """The clock a run reads (naive UTC, as the ledger stores times): the real one,
    or ``now`` fixed (a test's, or a scheduler tick's given moment)."""
    if now is None:
        return utcnow
    fixed = now.astimezone(dt.UTC).replace(tzinfo=None) if now.tzinfo else now
    return lambda: fixed


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
    due: int = 0  # deferred rows of this edition put back in the queue (their try is due)
    # the papers the emails planned now show (rows planned earlier: not known here)
    papers: set[str] = field(default_factory=set)


def _nothing(note: str) -> Planned:
    return Planned(None, None, None, PlanReport(), 0, 0, 0, note)


def plan_edition(config: EditionConfig, engine: Engine, day: dt.date,
                 slot: str = "", *, now: dt.datetime | None = None) -> Planned:
    """Create (or find) the edition, take back unfinished rows, and plan everyone not yet
    planned. Safe to repeat: a second call plans only who is new.

    Without a slot, everyone active who has no row for ``day`` is planned for ``day``.
    With a slot (a UTC hour on ``day``), everyone whose local send time has passed on
    their local day and who has no row for that local day (see ``slots``). Either way
    the unique (subscriber, day) key decides, so overlapping runs send once. A run
    with nobody to plan and nothing left to deliver opens no edition (no ranking, no
    template compiling), which is most hourly slots. Deferred rows of the edition
    whose next try is due at ``now`` go back in its queue first: a deferred person
    keeps their row (never a second one), and that row is what is sent. An edition
    the operator abandoned is neither planned nor delivered: the note says so."""
    slot = check_slot(slot)
    with session_scope(engine, readonly=True) as s:
        existing = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == slot))
        if existing is not None and existing.abandoned_at is not None:
            return _nothing(f"{abandoned_note(existing)}: nothing sent")
        planned = groups(s, day, slot, config.schedule.catch_up_hours)
        due = anyone_to_plan(s, planned)
        if (existing is None and not edition_entries(s, slot, utcnow(), day)
                and not weekly_due(s, planned, day, slot)
                and not gap_due(s, planned, day, slot)):
            return _nothing(no_new_papers(s, slot))
        if existing is None and not due:
            return _nothing(f"nobody is due{f' in slot {slot}' if slot else ''}: every "
                            "active subscriber due has had that day's edition")
    edition = reopen_if_empty(engine, get_or_create_edition(engine, day, slot), slot)
    ledger = DbLedger(engine, edition)
    reclaimed = ledger.reclaim() + ledger.retry_failed()
    requeued = ledger.requeue_due(clock_at(now)())
    plan = PlanReport()
    note = ""
    with session_scope(engine, readonly=True) as s:
        if not due and not pending_count(s, edition):
            waiting = s.scalar(select(func.min(Delivery.next_try_at)).where(
                Delivery.edition_id == edition.id,
                Delivery.status == DeliveryStatus.DEFERRED))
            later = (f" (deferred deliveries wait for their next try, the first at "
                     f"{waiting:%Y-%m-%d %H:%M} UTC)" if waiting is not None else "")
            return Planned(edition, ledger, None, plan, reclaimed, 0, 0,
                           "nobody new to plan and nothing left to deliver now" + later,
                           requeued)
        ctx = ONCE.open(config, s, edition, gap=gap_planned(s, planned))
        shown: set[str] = set()
        r = config.ranking
        empty = ("no paper matched the profile (trending section off)"
                 if r.trending == "none" or not r.trending_count
                 else "every candidate paper was already sent to them")
        wider = {"weekly": 0, "weekdays": 0}  # planned over the week's, the weekend's
        for group, (weekly, gap) in itertools.product(planned, KINDS):
            selection, _ = ctx.selection_for(weekly, gap)
            if selection is None or not selection.entries:
                continue
            part = ledger.plan(plan_jobs(selection, group.recipients(s, weekly, gap),
                                         r.max_papers, day=group.day, weekly=weekly,
                                         papers=shown, gap=gap),
                               empty_reason=empty)
            plan.planned += part.planned
            plan.skipped += part.skipped
            plan.already += part.already
            if weekly or gap:
                wider["weekly" if weekly else "weekdays"] += part.planned
        if not ctx.rows:  # a weekly email may still be due: the week had papers
            note = no_new_papers(s, slot, edition)
            went = [f"{n} {kind} email{'s' if n != 1 else ''} due "
                    f"{'go' if n != 1 else 'goes'} out with the "
                    f"{'week' if kind == 'weekly' else 'weekend'}'s papers"
                    for kind, n in wider.items() if n]
            # The edition now holds weekly or weekdays rows, ranked up to its cutoff,
            # which stays (``reopen_if_empty``): papers ingested later go to the next one.
            later = "papers ingested since go to the next edition"
            if went:
                note = note.partition(";")[0] + "; " + "; ".join(went) + f"; {later}"
            elif holds_rows(s, edition):
                note = (note.partition(";")[0] + "; this day's edition went out with the "
                        f"week's or the weekend's papers, and {later}")
    with session_scope(engine, readonly=True) as s:
        pending = pending_count(s, edition)
    return Planned(edition, ledger, ctx, plan, reclaimed, len(ctx.rows), pending, note,
                   requeued, shown)

# ---- delivering --------------------------------------------------------------------


@dataclass
class SendSummary:
    edition: Edition | None  # None: nothing was planned (see ``note``)
    candidates: int
    plan: PlanReport
    reclaimed: int
    report: DeliverReport
    note: str = ""  # why nothing was planned, when nothing was
    due: int = 0  # deferred rows (of any edition) whose next try was due, sent again
    # The opened edition, handed back rather than freed on return: freeing it object by
    # object (the corpus's postings, the ranking's and the render's caches) took 0.1 s
    # after an edition of 4,000, which a one-shot command can leave to its exit.
    context: EditionContext | None = field(default=None, repr=False, compare=False)
    # rows of the edition given back and still pending when the run ended without a
    # stop (leases that could not be renewed in time): said, never left silently
    left: int = 0
    # rows still to send when a stop (a signal) ended the run, of the editions it was
    # delivering (its own, earlier ones it took up): given back, or never claimed
    pending: int = 0
    # of ``due``, the rows of earlier editions an interrupted run left pending, sent
    # now (not deferred ones: said apart)
    resumed: int = 0
    # (edition, rows) of other editions whose rows wait, pending, for a later run to take
    # them up (``waiting_elsewhere``): said, so "nothing left to deliver" is not all
    elsewhere: list[tuple[Edition, int]] = field(default_factory=list)


def send(config: EditionConfig, engine: Engine, day: dt.date, transport: Transport, *,
         slot: str = "", on_progress: Callable[[Outcome], None] | None = None,
         on_planned: Callable[[int], None] | None = None,
         shutdown: Shutdown | None = None, now: dt.datetime | None = None,
         make_transport: Callable[[], Transport] | None = None) -> SendSummary:
    """Plan, then deliver; then the deferred rows of other editions (an earlier slot
    or day) whose next try is due at ``now`` (default: the clock). The caller makes
    the transport (and so checks its configuration) before anything is written: a
    missing API key fails with no ledger rows. With ``make_transport`` (a transport
    for each further process) the edition is delivered by ``[transport] processes``
    processes when it is large enough (``delivery.processes``)."""
    with fewer_collections():  # ranking thousands of profiles allocates as sending does
        p = plan_edition(config, engine, day, slot, now=now)
    if on_planned:
        on_planned(p.pending)
    report = DeliverReport()
    if p.edition is not None and p.ledger is not None and p.context is not None:
        extra = (extra_processes(config.transport, p.pending)
                 if make_transport is not None and not (shutdown and shutdown.requested)
                 else 0)
        ledger, ctx = p.ledger, p.context
        if extra and make_transport is not None:
            maker = make_transport
            report = unrequeued_if_stopped(ledger, lambda: deliver_in_processes(
                config.transport, ledger, ctx, transport, maker, extra,
                on_progress=on_progress, shutdown=shutdown, retry=config.delivery,
                clock=clock_at(now), papers=p.papers))
        else:
            report = unrequeued_if_stopped(ledger, lambda: run_async(deliver(
                config.transport, ledger, ctx, transport, on_progress=on_progress,
                shutdown=shutdown, retry=config.delivery, clock=clock_at(now))))
    left = pending = 0
    if p.edition is not None and report.counts[RELEASED] and not report.stopped_by:
        with session_scope(engine, readonly=True) as s:
            left = pending_count(s, p.edition)
    others = retry_deferred(config, engine, transport, now=now, shutdown=shutdown,
                            on_progress=on_progress,
                            skip=p.edition.id if p.edition is not None else None)
    report.add(others.report)
    touched = ([p.edition.id] if p.edition is not None else []) + others.editions
    if report.stopped_by and touched:  # (its own edition's, or an earlier one's taken up)
        at = clock_at(now)()
        with session_scope(engine, readonly=True) as s:
            pending = int(s.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.edition_id.in_(touched),
                (Delivery.status == DeliveryStatus.PENDING)
                | ((Delivery.status == DeliveryStatus.DEFERRED)
                   & (Delivery.next_try_at <= at)))) or 0)
    elsewhere: list[tuple[Edition, int]] = []
    if not report.stopped_by:
        with session_scope(engine, readonly=True) as s:
            elsewhere = waiting_elsewhere(s, clock_at(now)(), config.delivery.retry_hours,
                                          {*touched})
    return SendSummary(p.edition, p.candidates, p.plan, p.reclaimed, report, p.note,
                       p.due + others.due, p.context, left, pending, others.resumed,
                       elsewhere)


def waiting_elsewhere(session: Any, at: dt.datetime, retry_hours: float,
                      skip: set[int]) -> list[tuple[Edition, int]]:
    """(edition, pending rows) of the editions other than ``skip`` that hold rows a run
    left pending, planned within ``retry_hours`` and not being delivered by a live run:
    what a later run takes up once nothing has touched them for ``LEFT_AFTER``
    (``left_pending``), or `send` for that day and slot at once. A `send` of another
    slot said "nothing left to deliver" over them, and exited 0."""
    where = [Delivery.status == DeliveryStatus.PENDING,
             Delivery.created_at >= at - dt.timedelta(hours=retry_hours)]
    if skip:
        where.append(Delivery.edition_id.not_in(skip))
    rows = dict(session.execute(select(Delivery.edition_id, func.count()).where(*where)
                                .group_by(Delivery.edition_id)).all())
    live = delivering(session, set(rows), at)
    return [(edition, int(rows[edition.id])) for edition in session.scalars(
        select(Edition).where(Edition.id.in_(set(rows) - live)).order_by(Edition.id))]


@dataclass
class Retried:
    """The rows sent again by one ``retry_deferred`` (deferred rows due, and rows an
    interrupted run left pending): how many were due, in which editions, and how
    their sending went."""

    due: int = 0
    editions: list[int] = field(default_factory=list)
    report: DeliverReport = field(default_factory=DeliverReport)
    resumed: int = 0  # of ``due``, the rows an interrupted run left (never deferred)


def retry_deferred(config: EditionConfig, engine: Engine, transport: Transport, *,
                   now: dt.datetime | None = None, skip: int | None = None,
                   shutdown: Shutdown | None = None,
                   on_progress: Callable[[Outcome], None] | None = None) -> Retried:
    """Send again every deferred row whose next try is due at ``now``, and the rows an
    interrupted run left pending (``left_pending``), edition by edition (each renders
    with its own papers); ``skip`` is an edition just delivered. What `newsletter run`
    does between its slots, and `send` after its own edition.

    A deferred row due is put back in its edition's queue (pending) before it is
    claimed. A run stopped then (a signal, a fault of the sending side) defers such
    rows it has not sent again (``unrequeue``): due, sent by the next run at once. A
    killed run cannot: its rows are due as they were (``requeued_due``, once nothing
    touched them for ``LEFT_AFTER``, and not while a live run delivers their edition),
    where they waited for ``left_pending``, which leaves rows planned more than
    ``retry_hours`` ago: a stopped run's promise that `send` sends them was not kept."""
    with session_scope(engine, readonly=True) as s:
        due, left = to_take_up(s, clock_at(now)(), config.delivery.retry_hours)
    done = Retried()
    for edition_id in sorted(due.keys() | left.keys()):
        if edition_id == skip or (shutdown is not None and shutdown.requested):
            continue
        try:
            report = deliver_edition(config, engine, edition_id, transport,
                                     shutdown=shutdown, on_progress=on_progress, now=now)
        except SendingStopped as exc:
            if not exc.edition_only:
                raise
            # this edition's messages refused for their size or content, none accepted:
            # its rows wait (pending), said once; the next edition's deferred rows are
            # still due, and would expire behind it at every try
            done.report.error(f"edition {edition_id}: {exc.reason}", run=True)
            continue
        if report is not None and not (report.abandoned and not report.counts):
            done.due += int(due.get(edition_id, 0)) + left.get(edition_id, 0)
            done.resumed += left.get(edition_id, 0)
            done.editions.append(edition_id)
            done.report.add(report)
    return done


LEFT_AFTER = dt.timedelta(minutes=10)


def to_take_up(session: Any, at: dt.datetime, retry_hours: float
               ) -> tuple[dict[int, int], dict[int, int]]:
    """What ``retry_deferred`` takes up at ``at``, by edition: the rows whose next try
    is due (deferred, or put back in the queue by a killed run: ``requeued_due``, left
    to a live run that delivers their edition), and the rows of an edition an
    interrupted run left (``left_pending``). Preview reads the same."""
    due = dict(session.execute(select(Delivery.edition_id, func.count())
                               .where(Delivery.status == DeliveryStatus.DEFERRED,
                                      Delivery.next_try_at <= at)
                               .group_by(Delivery.edition_id)).all())
    requeued = dict(session.execute(select(Delivery.edition_id, func.count())
                                    .where(requeued_due(at, LEFT_AFTER, retry_hours))
                                    .group_by(Delivery.edition_id)).all())
    # an edition a live run delivers takes its requeued rows itself
    for edition_id in delivering(session, set(requeued) - set(due), at):
        del requeued[edition_id]
    for edition_id, n in requeued.items():
        due[edition_id] = due.get(edition_id, 0) + n
    return due, dict(left_pending(session, at, retry_hours))


def left_pending(session: Any, at: dt.datetime, retry_hours: float = 24.0
                 ) -> list[tuple[int, int]]:
    """(edition, rows to send) of each edition that nothing is delivering: rows pending
    (or leased by a holder whose lease has run out: a killed run), none under a lease
    still running (a live `send`, scheduler slot or worker always holds the rows it
    claimed ahead), none touched for ``LEFT_AFTER``. An interrupted `send` (Ctrl-C,
    SIGTERM, a crash) leaves its edition so, and no later slot plans those people
    again (they have that day's row): without this their email waited for someone to
    run `send` again. The wait lets the workers of a `send --queue` start on their
    edition first; a process of this host that still runs holds its rows however old
    their lease; and rows planned more than ``retry_hours`` ago (``[delivery]``, after
    which a deferred row is failed too) are left: an edition stopped long ago is not
    sent out of the blue."""
    quiet = at - LEFT_AFTER
    # (a deferred row due back in the queue is counted by ``retry_deferred`` as due)
    rows = session.execute(
        select(Delivery.edition_id,
               func.sum(case((((Delivery.status == DeliveryStatus.PENDING)
                               & not_requeued_due(at, LEFT_AFTER, retry_hours))
                              | (Delivery.lease_expires <= quiet), 1), else_=0)),
               func.sum(case(((Delivery.status == DeliveryStatus.SENDING)
                              & (Delivery.lease_expires > quiet), 1), else_=0)),
               func.max(Delivery.updated_at))
        .where(Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
               Delivery.created_at >= at - dt.timedelta(hours=retry_hours))
        .group_by(Delivery.edition_id)).all()
    found = [(int(edition_id), int(waiting)) for edition_id, waiting, live, touched in rows
             if waiting and not live and touched is not None and touched <= quiet]
    if not found:
        return []
    # a process of this host that still runs is sending them, however old its lease
    held = delivering(session, {e for e, _ in found}, quiet)
    return [(e, n) for e, n in found if e not in held]


def delivering(session: Any, editions: set[int], at: dt.datetime) -> set[int]:
    """Which of ``editions`` a run is delivering at ``at``: rows under a lease that has
    not run out, or held by a process of this host that still runs."""
    if not editions:
        return set()
    return {int(e) for e, owner, expires in session.execute(
        select(Delivery.edition_id, Delivery.lease_owner, func.max(Delivery.lease_expires))
        .where(Delivery.edition_id.in_(editions),
               Delivery.status == DeliveryStatus.SENDING)
        .group_by(Delivery.edition_id, Delivery.lease_owner))
        if not lease_gone(owner, expires, at)}


def deliver_edition(config: EditionConfig, engine: Engine, edition_id: int,
                    transport: Transport, *, shutdown: Shutdown | None = None,
                    on_progress: Callable[[Outcome], None] | None = None,
                    now: dt.datetime | None = None) -> DeliverReport | None:
    """Deliver what is planned and not yet sent of a stored edition (all of it, or the
    share one worker claims before the others do): take back rows whose lease holder
    is gone and deferred rows due at ``now``, then claim and send until none is left.
    None: no such edition.

    The Celery worker's task, the console's retry and ``retry_deferred`` run this. An
    abandoned edition is not opened: the reclaim skips what a gone holder left (the
    ledger's rule), and the report says why nothing was sent."""
    with session_scope(engine, readonly=True) as s:
        edition = s.get(Edition, edition_id)
        if edition is None:
            return None
        ctx = (ONCE.open(config, s, edition, ignore_sent=True)  # the plan ranked already
               if edition.abandoned_at is None else None)
    ledger = DbLedger(engine, edition)
    ledger.reclaim()
    if ctx is None:
        return DeliverReport(abandoned=abandoned_reason(edition.abandoned_reason))
    ledger.requeue_due(clock_at(now)())
    return unrequeued_if_stopped(ledger, lambda: run_async(deliver(
        config.transport, ledger, ctx, transport, on_progress=on_progress,
        shutdown=shutdown, retry=config.delivery, clock=clock_at(now))))


def unrequeued_if_stopped(ledger: DbLedger, run: Callable[[], DeliverReport]
                          ) -> DeliverReport:
    """``run()``'s report; the deferred rows ``ledger`` put back in the queue and never
    claimed are deferred again (``DbLedger.unrequeue``) when it stopped: by a signal
    (the report says) or a fault of the sending side (``SendingStopped``). Left
    pending, the next run did not count them as due."""
    try:
        report = run()
    except SendingStopped:
        ledger.unrequeue()
        raise
    if report.stopped_by:
        ledger.unrequeue()
    return report


def send_command(day: object, slot: str) -> str:
    """The command that sends an edition's rows (its day and slot): what `status`, a
    `send` over rows left elsewhere and a refused retry name."""
    return f"newsletter send --date {day}" + (f" --slot {slot}" if slot else "")


def requeue_failed(engine: Engine, edition_id: int) -> int:
    """Put an edition's transient failures, its rows refused for their size or content
    or expired deferred, and its deferred rows (due or not: the operator asked for now)
    back in its queue (pending); how many.
    ``deliver_edition`` (or the next ``send``) then sends them."""
    with session_scope(engine, readonly=True) as s:
        edition = s.get(Edition, edition_id)
    if edition is None:
        raise InputError(f"no edition {edition_id}")
    if edition.abandoned_at is not None:  # (the ledger requeues none of it either)
        raise InputError(f"{abandoned_note(edition)}: nothing is sent again")
    return DbLedger(engine, edition).retry_failed(deferred=True)


# ---- abandoning ----------------------------------------------------------------------


def edition_name(edition: Edition) -> str:
    """An edition as the operator's one-line messages name it: ``edition #N (DAY)``,
    with its slot when it has one."""
    slot = f" slot {edition.slot}" if edition.slot else ""
    return f"edition #{edition.id} ({edition.day}{slot})"


def abandoned_note(edition: Edition) -> str:
    """The one line said of an abandoned edition (`send`, the console's retry)."""
    at = f"{edition.abandoned_at:%Y-%m-%d %H:%M} UTC" if edition.abandoned_at else "?"
    why = f": {edition.abandoned_reason}" if edition.abandoned_reason else ""
    return f"{edition_name(edition)} was abandoned by the operator at {at}{why}"


def find(engine: Engine, *, edition_id: int | None, day: dt.date | None,
         asked: str) -> Edition:
    """The edition an operator named (an id, else the latest of a day), as `status`
    finds it; ``InputError`` when there is none."""
    with session_scope(engine, readonly=True) as s:
        found = find_edition(s, edition_id=edition_id, day=day)
    if found is None:
        raise InputError(f"no edition {asked}")
    return found


def abandon(engine: Engine, edition: Edition, *, by: str, reason: str) -> Abandoned:
    """Abandon ``edition`` for good (``DbLedger.abandon``): its rows not handed to a
    server are skipped with ``reason``, and nothing plans, claims or requeues its rows
    again (the ledger checks at each), whichever command or process asks."""
    return DbLedger(engine, edition).abandon(by, reason.strip())


class Background:
    """Deliveries running in threads of a long-lived process (the console's retry):
    the request that starts one returns at once. One at a time per edition; a second
    request while one runs only requeues (the running delivery claims those rows too).
    A process that dies mid-way leaves leased rows that the next run takes back."""

    def __init__(self) -> None:
        self._running: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, edition_id: int, work: Callable[[], Any]) -> bool:
        """Run ``work`` in a thread unless one already runs for ``edition_id``."""
        with self._lock:
            running = self._running.get(edition_id)
            if running is not None and running.is_alive():
                return False
            thread = threading.Thread(target=self._run, args=(edition_id, work),
                                      name=f"deliver-edition-{edition_id}")
            self._running[edition_id] = thread
            thread.start()
            return True

    def _run(self, edition_id: int, work: Callable[[], Any]) -> None:
        import logging

        try:
            work()
        except NewsletterError as exc:  # e.g. SendingStopped: one line, the rows wait
            logging.getLogger("newsletter.delivery").error(
                "background delivery of edition %s: %s", edition_id, exc)
        except Exception:  # noqa: BLE001 - a thread's error has nobody else to go to
            logging.getLogger("newsletter.delivery").exception(
                "background delivery of edition %s failed", edition_id)
        finally:
            with self._lock:
                if self._running.get(edition_id) is threading.current_thread():
                    del self._running[edition_id]

    def join(self, timeout: float | None = None) -> None:
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout)


def retry_failed(config: EditionConfig, engine: Engine, edition_id: int,
                 make_transport: Callable[[], Transport], background: Background, *,
                 force: bool = False) -> int:
    """Requeue an edition's failures an operator can have sent again
    (``requeue_failed``) and deliver them in the background
    (the same ``deliver_edition`` a worker runs); returns how many were requeued at
    once, without waiting for the sending. Behind the compliance gate `send` holds
    (``InputError`` naming each problem, nothing requeued) unless ``force``: the
    console has no ``--force``, so its words name the command that has one."""
    from newsletter.delivery.check import compliance_gate

    try:
        compliance_gate(config.transport.backend, config.web, config.sender, force)
    except InputError as exc:
        with session_scope(engine, readonly=True) as s:
            edition = s.get(Edition, edition_id)
        again = (send_command(edition.day, edition.slot) if edition is not None
                 else "newsletter send")
        raise InputError(exc.message, f"run `newsletter check`; `{again} --force` sends "
                         "them anyway") from None
    queued = requeue_failed(engine, edition_id)
    if queued:
        transport = make_transport()  # a configuration error is the caller's, now
        background.start(edition_id, lambda: deliver_edition(config, engine, edition_id,
                                                             transport))
    return queued

# ---- status ------------------------------------------------------------------------


def status(engine: Engine, *, edition_id: int | None = None, day: dt.date | None = None,
           asked: str = "") -> dict[str, Any]:
    """Counts by state and the last errors of an edition (by id, else the latest of
    ``day``, else the latest), with the heartbeats of the running processes.
    ``asked`` is the edition as the operator named it, for the error."""
    from newsletter.delivery.status import deferred_summary, subscriber_counts
    from newsletter.observe.heartbeat import processes

    with session_scope(engine, readonly=True) as s:
        found = find_edition(s, edition_id=edition_id, day=day)
    procs = processes(engine)
    if found is None and (asked or not procs):
        raise InputError(f"no edition {asked}" if asked else "no edition has been sent yet")
    data: dict[str, Any] = (edition_status(engine, found) if found is not None
                            else {"edition": None})
    data["processes"] = procs
    data["subscribers"] = subscriber_counts(engine)
    data["deferred_all"] = deferred_summary(engine)
    return data
