"""Previews: exactly what ``send`` would send, rendered to files and written nowhere
else. ``preview`` is ``newsletter preview`` (the send pipeline with a memory ledger and
a file transport); ``preview_email`` is the console's one email, for a subscriber or
for typed keywords, with why each paper was picked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.parser
import email.policy
import re
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, or_, select
from sqlalchemy.orm import Session

from newsletter.delivery.deliver import deliver, run_async
from newsletter.delivery.edition import EditionConfig, EditionContext
from newsletter.delivery.ledger import (
    MemoryLedger,
    Outcome,
    OutcomeStatus,
    abandoned_reason,
    lease_gone,
    requeued_failure,
)
from newsletter.delivery.plan import Job, plan_now
from newsletter.delivery.planning import (
    KINDS,
    check_slot,
    groups,
    no_new_papers,
    window_had_papers,
)
from newsletter.delivery.preview import (
    PreviewReport,
    PreviewTransport,
    require_database,
    write_parts,
)
from newsletter.errors import InputError
from newsletter.frequency import GAP_DAYS, due_on, kind_on
from newsletter.ranking.engine import because_label
from newsletter.render.mime import Message
from newsletter.render.renderer import Recipient
from newsletter.service.editions import ONCE, abandoned_note, to_take_up
from newsletter.store.db import READONLY, session_scope
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.store.queries import edition_entries, subscriber_rows
from newsletter.store.subscribers import check_keywords, normalize_email

# Who a keywords-only preview is addressed to: a reserved domain (RFC 2606).
KEYWORDS_ADDRESS = "preview@example.invalid"
NOTHING = "no papers matched and no trending section"


Due = list[tuple[dt.date, bool, bool, list[Recipient]]]  # (newsletter day, weekly, gap,
# who): the kinds of ``planning.KINDS``


def _due_now(session: Any, day: dt.date, email: str | None, slot: str = "",
             catch_up_hours: int = 0) -> Due:
    """Who ``send`` for ``day`` (and ``slot``) would plan now, by newsletter day and
    daily/weekdays apart from weekly: the same groups ``plan_edition`` plans (no slot:
    everyone due that day who has not had it; a slot: everyone whose local send time
    has passed on their local day, catch-up included). ``email`` without a slot: only
    that subscriber, whatever their status (an operator previews a paused one too);
    with a slot, only if the slot would send to them."""
    if email and not slot:
        [row] = list(subscriber_rows(session, email=email))
        freq = session.get(Subscriber, row[0]).frequency
        had = session.scalar(select(Delivery.id).where(Delivery.subscriber_id == row[0],
                                                       Delivery.day == day).limit(1))
        due = [] if had is not None or freq not in due_on(day) else [Recipient(*row)]
        return [(day, *kind_on(freq, day), due)]
    wanted = normalize_email(email) if email else None
    return [(group.day, weekly, gap, [r for r in group.recipients(session, weekly, gap)
                                      if wanted is None or r.email == wanted])
            for group in groups(session, day, slot, catch_up_hours)
            for weekly, gap in KINDS]


def _nothing_to_send(session: Any, day: dt.date, email: str | None, existing: Edition | None,
                     due: Due, slot: str = "") -> str:
    """What ``send`` would say instead of sending, or "" when it would send."""
    if not any(people for *_, people in due):
        who = email or "every active subscriber due"
        if slot:
            return (f"nothing to send for {day} in slot {slot}: {who} is not due in that "
                    "slot or has had their day's edition (preview another slot with "
                    "--slot, or everyone due that day without it)")
        return (f"nothing to send for {day}: {who} has had that day's edition or is "
                "not due that day (preview another day with --date)")
    weekly_due = any(people for _, weekly, _, people in due if weekly)
    gap_due = any(people for _, _, gap, people in due if gap)
    if (existing is None and not edition_entries(session, slot, utcnow(), day)
            and not (weekly_due and window_had_papers(session, slot, day))
            and not (gap_due and window_had_papers(session, slot, day, GAP_DAYS))):
        return f"nothing to send for {day}: {no_new_papers(session, slot)}"
    return ""


@dataclass
class _Planned:
    """A preview's plan: the opened edition and the jobs, or what ``send`` would say
    instead (``note``); and the rows of earlier editions that ``send`` would take up
    after its own (``others``: each edition's context and jobs)."""

    ctx: EditionContext | None = None
    jobs: list[Job] = field(default_factory=list)
    empty: int = 0  # profiles with no keywords
    note: str = ""
    others: list[tuple[EditionContext, list[Job]]] = field(default_factory=list)


def _waiting(session: Any, edition: Edition | None, email: str | None, *,
             own: bool = True) -> list[Job]:
    """The rows of the edition that ``send`` would deliver as they are: planned by an
    earlier run (``send --queue``, an interrupted send) and not sent yet, leased by a
    run that is gone (killed: ``send`` takes them back), or deferred with their next
    try due; of the day's own edition (``own``: not an earlier one's) also those
    failed in a way ``send`` tries again (``requeued_failure``) and, when the operator
    abandoned it, the rows its abandonment skipped: nothing sends them, but they are
    the emails it was about to send, which is what its preview is read for (what went
    wrong). ``email``: only that subscriber's. A deferred row keeps the keywords its
    picks were made for."""
    if edition is None:
        return []
    now = utcnow()
    again: list[ColumnElement[bool]] = [
        Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.SENDING)),
        (Delivery.status == DeliveryStatus.DEFERRED) & (Delivery.next_try_at <= now)]
    if own:
        again.append(requeued_failure())
    if own and edition.abandoned_at is not None:
        again.append((Delivery.status == DeliveryStatus.SKIPPED)
                     & (Delivery.reason == abandoned_reason(edition.abandoned_reason)))
    q = (select(Delivery, Subscriber).join(Subscriber)
         .where(Delivery.edition_id == edition.id,
                Subscriber.status == SubscriberStatus.ACTIVE, or_(*again))
         .order_by(Delivery.id))
    if email:
        q = q.where(Subscriber.email == normalize_email(email))
    jobs = []
    host = socket.gethostname()
    for row, sub in session.execute(q):
        if row.status == DeliveryStatus.SENDING and not lease_gone(
                row.lease_owner, row.lease_expires, now, host):
            continue  # a live run is sending it
        job = Job.of(row, sub)
        if row.keywords is not None:
            job.recipient = dataclasses.replace(job.recipient, keywords=row.keywords)
        jobs.append(job)
    return jobs


def _earlier(config: EditionConfig, session: Any, own: int | None, email: str | None
             ) -> list[tuple[EditionContext, list[Job]]]:
    """The rows of other editions that ``send`` takes up after its own
    (``retry_deferred``: deferred rows due, and an edition an interrupted run left),
    each edition opened as ``deliver_edition`` opens it."""
    due, left = to_take_up(session, utcnow(), config.delivery.retry_hours)
    out = []
    for edition_id in sorted((due.keys() | left.keys()) - {own or 0}):
        edition = session.get(Edition, edition_id)
        jobs = _waiting(session, edition, email, own=False)
        if edition is not None and jobs:
            out.append((ONCE.open(config, session, edition, ignore_sent=True), jobs))
    return out


def _within(others: list[tuple[EditionContext, list[Job]]], room: int | None
            ) -> list[tuple[EditionContext, list[Job]]]:
    """The earlier editions' jobs, at most ``room`` in all (None: all of them)."""
    if room is None:
        return others
    kept = []
    for ctx, jobs in others:
        if room > 0:
            kept.append((ctx, jobs[:room]))
            room -= len(kept[-1][1])
    return kept


def _plan(config: EditionConfig, engine: Engine, day: dt.date, *, email: str | None,
          limit: int | None, recipients: list[Recipient] | None, slot: str = "",
          earlier: bool = True) -> _Planned:
    """Open the day's (or the slot's) edition, stored or not, and plan who ``send``
    would plan now (or the given ``recipients``), reading only."""
    slot = check_slot(slot)
    with engine.connect().execution_options(**{READONLY: True}) as conn, \
            Session(bind=conn) as s:  # read-only; nothing committed
        existing = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == slot))
        edition = existing or Edition(id=0, day=day, slot=slot, cutoff=utcnow())
        if existing is not None and not edition_entries(s, slot, existing.cutoff, day) and \
                s.scalar(select(Delivery.id).where(Delivery.edition_id == existing.id)
                         .limit(1)) is None:
            # send reopens it (``reopen_if_empty``): its window then runs to now
            edition = Edition(id=existing.id, day=day, slot=slot, cutoff=utcnow(),
                              created_at=existing.created_at)
        due: Due
        waiting: list[Job] = []
        others: list[tuple[EditionContext, list[Job]]] = []
        # ``send`` sends nothing of an abandoned edition (``plan_edition``): said in
        # one line, whatever the preview still shows
        abandoned = (f"{abandoned_note(existing)}: nothing will be sent for it"
                     if existing is not None and existing.abandoned_at is not None else "")
        if recipients is None:
            if email and not list(subscriber_rows(s, email=email)):
                raise InputError(f"{email} is not a subscriber")
            due = _due_now(s, day, email, slot, config.schedule.catch_up_hours)
            waiting = _waiting(s, existing, email)
            others = (_earlier(config, s, existing.id if existing else None, email)
                      if earlier else [])
            note = "" if waiting else _nothing_to_send(s, day, email, existing, due, slot)
            if note:
                conn.rollback()
                return _Planned(note=abandoned or note, others=_within(others, limit))
        else:
            due = [(day, False, False, recipients)]
        ctx = ONCE.open(config, s, edition,
                        gap=any(people for _, _, gap, people in due if gap))
        planned = _Planned(ctx, list(waiting), others=others,
                           note=abandoned and f"{abandoned}; the preview shows the emails "
                           "it would have sent")
        # one row per edition and subscriber, as send's ledger keeps
        seen: set[int] = {j.recipient.id for j in waiting}
        for group_day, weekly, gap, people in due:  # (a late day first, as send plans it)
            if recipients is None:
                people = [r for r in people if r.id not in seen]
                seen.update(r.id for r in people)
            subs = people[:limit] if limit and recipients is None else people
            selection, _ = ctx.selection_for(weekly, gap)
            if selection is None or not subs or not selection.entries:
                continue  # as in ``send``: nobody is planned on papers there are none of
            planned.empty += sum(1 for r in subs if not r.keywords.strip())
            planned.jobs += plan_now(selection, subs, config.ranking.max_papers,
                                     weekly=weekly, day=group_day if slot else None, gap=gap)
        if limit:
            planned.jobs = planned.jobs[:limit]
            planned.others = _within(planned.others, limit - len(planned.jobs))
        conn.rollback()
    return planned


def preview(config: EditionConfig, engine: Engine, day: dt.date, out: Path, *,
            email: str | None = None, limit: int | None = None,
            recipients: list[Recipient] | None = None,
            on_progress: Callable[[Outcome], None] | None = None,
            slot: str = "", earlier: bool = True) -> PreviewReport:
    """Render what ``send`` would send on ``day`` into ``out`` (.eml, .html, .txt per
    recipient); nothing is written to the database. With ``slot`` (a UTC hour), what
    ``send --slot`` (the daemon's run for that hour) would send. When ``send`` would
    send nothing, the report says why (``note``). ``recipients`` previews people who
    need not be subscribers: the console's "type any keywords". ``earlier``: the rows of
    earlier editions that ``send`` takes up after its own are previewed too, each
    edition's in ``out/edition-N/``."""
    require_database(engine)
    planned = _plan(config, engine, day, email=email, limit=limit, recipients=recipients,
                    slot=slot, earlier=earlier)
    if planned.ctx is None and not planned.others:
        return PreviewReport(out, 0, note=planned.note)
    outcomes: list[Outcome] = []

    def render(ctx: EditionContext, jobs: list[Job], folder: Path) -> None:
        ledger = MemoryLedger([j for j in jobs if j.entry_ids])
        folder.mkdir(parents=True, exist_ok=True)

        def progress(o: Outcome) -> None:
            write_parts(folder, o)
            if on_progress:
                on_progress(o)

        run_async(deliver(config.transport, ledger, ctx, PreviewTransport(folder),
                          on_progress=progress))
        outcomes.extend(ledger.outcomes)
        outcomes.extend(Outcome(j, OutcomeStatus.SKIPPED, error=NOTHING)
                        for j in jobs if not j.entry_ids)

    if planned.ctx is not None:
        render(planned.ctx, planned.jobs, out)
    # what send takes up after its own edition, each edition's emails in a folder of its
    # own (a reader may have one there and one here)
    notes = [planned.note] if planned.note else []
    for ctx, jobs in planned.others:
        folder = out / f"edition-{ctx.edition.id}"
        render(ctx, jobs, folder)
        notes.append(f"send also takes up {len(jobs)} email{'s' if len(jobs) != 1 else ''} "
                     f"of the {ctx.edition.day} edition (#{ctx.edition.id}) that an earlier "
                     f"run left unsent or deferred: in {folder}/")
    return PreviewReport(out, len(planned.ctx.rows) if planned.ctx else 0, outcomes,
                         planned.empty, context=planned.ctx or planned.others[0][0],
                         note="; ".join(notes))

# ---- the console's one email -----------------------------------------------------------


@dataclass
class Why:
    title: str
    paper_id: str
    section: str  # matches | trending
    matched: list[tuple[str, float]]
    relevance: float
    popularity: float
    recency: float
    because: str = ""  # a "because you liked" fill: the liked paper's title

    @property
    def score(self) -> float:
        return round(self.relevance + self.popularity + self.recency, 4)

    @property
    def label(self) -> str:
        """What the email says of the pick (without scores)."""
        return because_label(self.because) if self.because else ""


@dataclass
class PreviewResult:
    to: str
    keywords: str
    day: dt.date
    candidates: int
    status: str  # sent (rendered) | skipped | failed
    error: str = ""
    subject: str = ""
    html: str = ""
    text: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    why: list[Why] = field(default_factory=list)
    message: Message | None = None


def _headers(data: bytes) -> list[tuple[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(head)
    return [(k, str(v)) for k, v in parsed.items()]


def _why(ctx: EditionContext, job: Job) -> list[Why]:
    """Why each paper was picked, from the same ranker call the renderer makes (over
    the week's papers for a weekly email, the weekend's for a weekdays Monday)."""
    selection, index = ctx.selection_for(job.weekly, job.gap)
    if selection is None:
        return []
    picks = [index[e] for e in job.entry_ids if e in index]
    explanations = selection.ranker.explain_many(
        job.recipient.keywords, picks, key=None if job.trending else job.recipient.id)
    rows = selection.entries
    return [Why(rows[i].title, rows[i].id, "trending" if job.trending else "matches",
                list(ex.matched), ex.relevance, ex.popularity, ex.recency, ex.because)
            for i, ex in zip(picks, explanations, strict=True)]


def preview_email(config: EditionConfig, engine: Engine, day: dt.date, *,
                  subscriber: str = "", keywords: str = "") -> PreviewResult:
    """One email as ``send`` would make it, for a subscriber or for typed keywords:
    exactly what ``preview`` renders (in a throw-away folder), plus the "why"."""
    recipients = None
    address = ""
    if subscriber.strip():
        address = normalize_email(subscriber)
    elif keywords.strip():
        recipients = [Recipient(0, KEYWORDS_ADDRESS, "", check_keywords(keywords))]
    else:
        raise InputError("pick a subscriber or type keywords")
    with tempfile.TemporaryDirectory(prefix="nl-admin-preview-") as tmp:
        report = preview(config, engine, day, Path(tmp), email=address or None,
                         recipients=recipients, earlier=False)  # the day's email alone
    if not report.outcomes:  # what `send` would say instead, in the console's words
        profile = keywords
        if address:
            with session_scope(engine, readonly=True) as s:
                profile = s.scalar(select(Subscriber.keywords).where(
                    Subscriber.email == address)) or ""
        note = re.sub(r" \([^()]*--[a-z][^()]*\)", "", report.note)  # the CLI's flags
        return PreviewResult(address or KEYWORDS_ADDRESS, profile, day, report.candidates,
                             str(OutcomeStatus.SKIPPED), note + " (pick another day above)")
    outcome = report.outcomes[0]
    job = outcome.job
    result = PreviewResult(job.recipient.email, job.recipient.keywords, day, report.candidates,
                           str(outcome.status), outcome.error)
    rendered = outcome.rendered
    if rendered is None:
        return result
    result.subject, result.html, result.text = rendered.subject, rendered.html, rendered.text
    result.message = rendered.message
    result.headers = _headers(rendered.message.data)
    if report.context is not None:
        result.why = _why(report.context, job)
    return result
