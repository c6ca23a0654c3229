"""Delivery: send every job a ledger hands out, with retries and a rate limit, and
record each outcome soon after it happens. Send and preview both run this.

Whose fault a failure is decides what happens to the row:

* the recipient's for good (5xx, no such user): ``failed``; a message refused for
  its size or content (``TransportError.content``) once the server has accepted
  another of the edition is this reader's own: ``failed`` too, with the reason
  ``refused_content``, which an operator's requeue (`send` of the edition again, the
  console's retry) sends again, as it does transient failures (the server's size
  limit raised, its filter fixed); before any is accepted it is not judged yet
  (``_Run.refused_for_what_it_is``);
* the recipient's for now: a 4xx to RCPT TO (greylisting, a busy mailbox:
  ``TransportError.later``) is ``deferred`` at once with a next try
  (``delivery.deferral``), or ``failed`` once ``[delivery] retry_hours`` are over;
  a message whose end got no answer (``TransportError.unanswered``: the server may
  have it) is deferred at once, never sent again within the run; other transient
  trouble (421, a timeout, a connection dropped before the message's end) is tried
  ``max_attempts`` times in the run first, then deferred the same way;
* ours (``TransportError.sender``: the login or certificate refused, our sender
  address refused, no connection; or ``max_attempts`` messages in a row unanswered):
  sending stops after the first proof (a
  permanent one, or ``max_attempts`` in a row with nothing sent between), every
  unsent row goes back to ``pending`` and ``SendingStopped`` says why. Nobody's
  delivery is spent on a fault of ours, and a rerun after the fix sends them all;
* a render error: the reader's (``failed``, never tried again) once some email of the
  run has rendered, or when the same email for a plain reader or one of the next jobs
  waiting renders; when none does (a template broken for everyone), ours, and the run
  stops as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import exc as db_errors

from newsletter.collector import fewer_collections
from newsletter.config import DeliveryConfig, TransportConfig
from newsletter.delivery.deferral import next_try
from newsletter.delivery.ledger import (
    EXPIRED,
    LEASE_SECONDS,
    REFUSED_CONTENT,
    RELEASED,
    Ledger,
    Outcome,
    OutcomeStatus,
)
from newsletter.delivery.plan import Job
from newsletter.delivery.ratelimit import RateLimiter
from newsletter.delivery.shutdown import Shutdown
from newsletter.errors import SendingStopped, TransportError, first_line
from newsletter.observe import delivery_outcome, delivery_retry
from newsletter.render.renderer import Recipient, Rendered
from newsletter.retry import backoff_delay
from newsletter.store.models import utcnow
from newsletter.transports.base import Transport

FLUSH_SECONDS = 0.05
END_POLL = 0.01  # how often the claims, run out, look whether the senders are done
RECORD_TRIES = 5  # tries of a failing lease renewal before sending stops
# How long claims and records may keep failing (the database gone: a server restarting,
# a failover, a full disk being freed) before sending stops. Nothing is sent meanwhile
# (``_Run.ledger_down``), so waiting sends nobody anything twice; a quarter of the
# lease, so that what is held is still held when the database is back. Five quick
# tries (under a second) ended a send at a one-second blip of PostgreSQL.
LEDGER_PATIENCE = LEASE_SECONDS / 4
LEDGER_WAIT = 2.0  # the longest pause between two tries of a failing claim or record
RENDER_AHEAD = 32  # emails rendered back to back, of the jobs waiting (see _Run.rendered)
RENDER_PROBES = 2  # jobs waiting tried when the run's first render fails (every_render_fails)
# messages refused in a row for their size or content, none of the run accepted, that
# stop the run as a fault of the sending side (``_Run.refused_for_what_it_is``)
CONTENT_IN_A_ROW = 5
PROBE_ADDRESS = "reader@example.org"  # the plain reader every_render_fails renders for
# error lines a report keeps, the first ones (``DeliverReport.error``); the rest are counted
ERRORS_KEPT = 20
# ---- delivery ------------------------------------------------------------------------


@dataclass
class DeliverReport:
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: int = 0  # the signal that stopped claiming (0: ran to the end)
    next_try: dt.datetime | None = None  # the earliest next try of the rows deferred here
    abandoned: str = ""  # the operator abandoned the edition meanwhile: the rows' reason
    errors_left_out: int = 0  # readers' error lines past ``ERRORS_KEPT``: counted
    run_lines: int = 0  # the first lines of ``errors``: the run's own (``error(run=)``)

    def error(self, line: str, *, run: bool = False) -> None:
        """One error line for the operator. A failed reader's is kept while fewer than
        ``ERRORS_KEPT`` are, else counted: every place a report gains one comes here,
        so a run over many editions holds and prints no more than one delivery does
        (`send` says how many it left out, and `status` lists each edition's last
        errors). The run's own (``run``: a delivery process that died, an edition that
        stopped) are few, always kept and listed first: `status` lists readers' rows,
        and such a line, left out behind twenty readers' failures, was nowhere."""
        if run:
            self.errors.insert(self.run_lines, line)
            self.run_lines += 1
        elif len(self.errors) - self.run_lines < ERRORS_KEPT:
            self.errors.append(line)
        else:
            self.errors_left_out += 1

    def add(self, other: DeliverReport) -> None:
        """Another delivery of the same run (a deferred row's edition) counted in."""
        self.counts.update(other.counts)
        for i, line in enumerate(other.errors):
            self.error(line, run=i < other.run_lines)
        self.errors_left_out += other.errors_left_out
        self.seconds += other.seconds
        self.stopped_by = self.stopped_by or other.stopped_by
        self.abandoned = self.abandoned or other.abandoned
        if other.next_try is not None and (self.next_try is None
                                           or other.next_try < self.next_try):
            self.next_try = other.next_try


class Renders(Protocol):
    """What delivery needs of an opened edition: one job's email, and what every
    job's email reads, made ahead of a fork."""

    def render(self, job: Job) -> Rendered: ...

    def prepare(self, papers: Collection[str]) -> None:
        """Make what rendering these papers reads, once (called before a fork)."""


def claim_batch(t: TransportConfig) -> int:
    """How many rows one claim takes. Claims run ahead of the sending (the next batch
    is claimed in a thread while this one goes out), so the connections never wait for
    the database between batches, nor for a batch's slowest message before the next one
    starts. At most two batches wait claimed; under a rate limit a batch is small
    enough that both go out well within their lease, so no other process reclaims a
    row this one is about to send."""
    size = max(64, t.concurrency * 8)
    rate = min(r for r in (t.rate_per_second, t.rate_per_hour / 3600, math.inf) if r > 0)
    if rate < math.inf:
        size = max(1, min(size, int(rate * LEASE_SECONDS / 4)))
    return size


async def deliver(t: TransportConfig, ledger: Ledger, ctx: Renders, transport: Transport,
                  *, on_progress: Callable[[Outcome], None] | None = None,
                  sleep: Callable[[float], Any] = asyncio.sleep,
                  shutdown: Shutdown | None = None,
                  retry: DeliveryConfig | None = None,
                  clock: Callable[[], dt.datetime] = utcnow) -> DeliverReport:
    """Send every job the ledger hands out; record each outcome soon after it happens.

    When ``shutdown`` is requested (SIGTERM/SIGINT), no more rows are claimed, jobs
    not yet handed to the transport are released back to ``pending``, and messages
    already with the server finish and are recorded before this returns. A failure
    of our own side ends the run the same way, then raises ``SendingStopped``.
    ``clock`` (naive UTC) dates the deferrals."""
    run = _Run(t, ledger, ctx, transport, on_progress=on_progress, sleep=sleep,
               shutdown=shutdown or Shutdown(), retry=retry or DeliveryConfig(), clock=clock)
    with fewer_collections():
        return await run.run()


class _Jobs(asyncio.Queue["Job | None"]):
    """The claimed jobs waiting for a sender, in order; ``waiting`` shows the first ones
    without taking them (``_queue`` is the deque ``asyncio.Queue._init`` makes for its
    subclasses)."""

    def waiting(self, n: int) -> list[Job | None]:
        return list(itertools.islice(self._queue, n))  # type: ignore[attr-defined]


# Database errors that no wait mends: the tables are not what the code writes (a
# restore cut short, a column or constraint missing), the user lacks privileges on
# them, a value or a constraint refused. Waiting out ``LEDGER_PATIENCE`` for one only
# put off the one-line error by half a minute. (A server gone, a lock, a full disk
# are ``OperationalError``s, and anything that is not the database's is waited for.)
_NOT_MENDED_BY_WAITING = (db_errors.ProgrammingError, db_errors.IntegrityError,
                          db_errors.DataError, db_errors.NotSupportedError)


class _Patience:
    """One failing ledger operation's tries: when the next comes (backing off, up to
    ``LEDGER_WAIT``) and whether ``LEDGER_PATIENCE`` has run out since it began to fail
    (at once for an error no wait mends)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.tries = 0

    def succeeded(self) -> None:
        self.since, self.tries = None, 0

    def failed(self, exc: BaseException | None = None) -> bool:
        """Count a failure (``exc``); True when it has been failing for too long, or
        is one that waiting cannot mend."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self.tries += 1
        return (isinstance(exc, _NOT_MENDED_BY_WAITING)
                or now - self.since >= LEDGER_PATIENCE)

    def delay(self) -> float:
        return min(backoff_delay(min(self.tries, 10), FLUSH_SECONDS), LEDGER_WAIT)


class _Run:
    """One delivery: a claimer feeding ``concurrency`` senders through a bounded queue,
    and a flusher writing their outcomes to the ledger. What they share is here, by
    name: the outcomes not yet recorded (``pending``) and the first error that ends the
    run early (``failure``)."""

    def __init__(self, t: TransportConfig, ledger: Ledger, ctx: Renders,
                 transport: Transport, *, on_progress: Callable[[Outcome], None] | None,
                 sleep: Callable[[float], Any], shutdown: Shutdown,
                 retry: DeliveryConfig, clock: Callable[[], dt.datetime]) -> None:
        self.t = t
        self.retry = retry
        self.clock = clock
        # Failures of our own side in a row, across the senders, with nothing sent
        # between: ``max_attempts`` of them prove the fault is not one message's.
        self.sender_strikes = 0
        self.ledger = ledger
        self.ctx = ctx
        self.transport = transport
        self.on_progress = on_progress
        self.sleep = sleep
        self.stop = shutdown
        self.limiter = RateLimiter(t.rate_per_second, t.rate_per_hour,
                                   sent_last_hour=_sent_last_hour(ledger, t))
        self.report = DeliverReport()
        self.pending: list[Outcome] = []  # outcomes not yet recorded
        self.failure: Exception | None = None  # the first error that ends the run early
        # The last claim, or the last record, failed (the database gone: a full disk, a
        # server restarting): no message starts meanwhile, since one the ledger cannot
        # record is sent again by the next run (``ledger_down``).
        self.claim_failing = self.record_failing = False
        # since when records have been failing: the flusher's tries and the last
        # record's share it, so the run's whole wait is ``LEDGER_PATIENCE``
        self.record_patience = _Patience()
        # Until when (monotonic) every row this loop holds is surely still its own: a
        # quarter of a lease before the earliest lease could run out, counted from the
        # start of the first claim, then of the last renewal that succeeded.
        self.held_until: float | None = None
        # When (monotonic) the last lapse ended, and when each held row was claimed: a
        # row claimed before a lapse may have been taken back meanwhile (``may_send``)
        self.lapse_ended: float | None = None
        self.claimed_at: dict[int | None, float] = {}
        self.given_back = 0  # rows released by a lapse, still to be looked for again
        self.in_hand = 0  # jobs a sender has taken and not yet counted
        self.recording = 0  # records under way (outcomes taken from ``pending``)
        self.finished = asyncio.Event()  # set once every sender and the claimer ended
        self.batch = claim_batch(t)
        self.queue = _Jobs(maxsize=self.batch)
        # Emails rendered ahead for jobs still waiting, by the job's id (the entry holds
        # the job, so no other takes its id meanwhile): the email, or what rendering it
        # raised. Not under a rate limit, where the CPU is not what limits the sending.
        self.ready: dict[int, tuple[Job, Rendered | Exception, float]] = {}
        # Seconds to add to a job's time from taken to sent (``newsletter_send_seconds``):
        # its own render when made ahead by another sender, minus the others' renders
        # for the sender that made them, so each delivery counts its own render.
        self.shift: dict[int, float] = {}
        self.ahead = RENDER_AHEAD if self.limiter.unlimited else 1
        self.rendered_ok = False  # whether an email of this run has rendered yet
        self.accepted = False  # whether a message of this run has been accepted yet
        self.held_back = 0  # refused for size or content since, none accepted (held back)
        self.held_why = ""  # the last such refusal
        self.asked_ledger = False  # whether the ledger was asked for a sent row yet
        self.held_rows = 0  # rows held back so, not claimed again since
        self.senders = max(1, t.concurrency)
        # Metrics and a log line per outcome for a real edition; a preview (no edition)
        # has none.
        self.edition_id = getattr(getattr(ledger, "edition", None), "id", None)

    def fail(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = exc

    def stopping(self) -> bool:
        return self.stop.requested or self.failure is not None

    def lease_lapsed(self) -> bool:
        """Whether a row handed out now might no longer be this loop's: the renewals
        have not succeeded for most of a lease (a database that hangs rather than
        fails: a lock held by a migration, a connection stuck). Another host may have
        taken the rows back by now; a message started anyway could reach its reader
        twice, so the row is given back instead (only if it is still ours)."""
        return self.held_until is not None and time.monotonic() > self.held_until

    def may_send(self, job: Job) -> bool:
        """Whether ``job``'s row is surely still this loop's: no lapse now, and none
        since it was claimed (a job waiting for the rate limit or a retry through a
        lapse may have lost its row to another host, renewed leases or not)."""
        if self.lease_lapsed():
            return False
        claimed = self.claimed_at.get(job.delivery_id)
        return self.lapse_ended is None or claimed is None or claimed > self.lapse_ended

    @property
    def ledger_failing(self) -> bool:
        return self.claim_failing or self.record_failing

    async def ledger_down(self) -> bool:
        """Whether a message must not start for want of a ledger to record it: wait
        while a claim or record is failing until one succeeds (True only once the run is
        stopping). A message sent meanwhile stayed leased in the ledger, unrecorded,
        and the next run took it back and sent it again: a database gone for a second
        sent every row claimed ahead twice, where only those in flight can be."""
        while self.ledger_failing and not self.stopping():
            await asyncio.sleep(FLUSH_SECONDS)
        return self.stopping()

    def _held_from(self, began: float) -> None:
        now = time.monotonic()
        if self.held_until is not None and now > self.held_until:
            self.lapse_ended = now  # rows claimed before now may have been taken back
        self.held_until = began + 3 * self.ledger.renew_seconds

    # ---- one job -------------------------------------------------------------------

    async def deliver_one(self, job: Job) -> Outcome:
        if self.stopping():
            self.ready.pop(id(job), None)
            self.shift.pop(id(job), None)
            return Outcome(job, RELEASED)
        rendered = self.rendered(job)
        if isinstance(rendered, Exception):  # a template bug must not lose the row
            error = f"render: {first_line(rendered)}"
            if not self.rendered_ok and self.every_render_fails(job):
                # Not this reader's: no email of the run renders (a template that fails
                # for everyone). Failed row by row, the whole edition was lost for good,
                # and fixing the template sent nothing; the run stops instead, every
                # row pending again, as for any fault of the sending side.
                self.fail(TransportError(error, sender=True, permanent=True))
                return Outcome(job, RELEASED, error=error)
            return Outcome(job, OutcomeStatus.FAILED, error=error, permanent=True)
        return await self.send(job, rendered)

    def every_render_fails(self, job: Job) -> bool:
        """Whether a render error is not ``job``'s reader's: the same email for a plain
        reader (another address and name, no keywords) fails too, with its papers, with
        each of them alone and with another paper of the edition (one paper's data can
        fail every email that shows it, and only those), and so does each of the next
        jobs waiting (up to ``RENDER_PROBES``, made now and kept for their senders). A
        preview (no edition) says each email's error instead. Probing a plain reader,
        not only the queue, keeps one reader's (or one paper's) error from stopping a run
        with nothing else waiting (one connection, a low rate limit, a last row):
        stopped, it was first again at every rerun, and nobody got the edition."""
        if self.edition_id is None:
            return False
        plain = dataclasses.replace(job, delivery_id=None, recipient=Recipient(
            job.recipient.id, PROBE_ADDRESS, "Reader", "", job.recipient.nonce))
        # the same papers, then each alone: one paper's data can fail every email that
        # shows it (a plain reader's too), and only those
        picks = [job.entry_ids] + ([[e] for e in job.entry_ids]
                                   if len(job.entry_ids) > 1 else [])
        # and another paper of the edition: an email whose one paper is the bad one
        other = next((e for e in getattr(self.ctx, "index", ()) if e not in job.entry_ids),
                     None)
        if other is not None:
            picks.append([other])
        for entry_ids in picks:
            try:
                self.ctx.render(dataclasses.replace(plain, entry_ids=entry_ids))  # not sent
                return False
            except Exception:  # noqa: BLE001, S112 - the answer sought: it fails too
                continue
        for other in self.queue.waiting(RENDER_PROBES):
            if other is None:
                continue
            hit = self.ready.get(id(other))
            if hit is None:
                hit = self.ready[id(other)] = (other, *self._make(other))
            if not isinstance(hit[1], Exception):
                return False
        return True

    def _make(self, job: Job) -> tuple[Rendered | Exception, float]:
        """``job``'s email (or what rendering it raised) and the seconds it took; an
        email made notes that this run renders (``rendered_ok``)."""
        began = time.perf_counter()
        try:
            made = self.ctx.render(job)
        except Exception as exc:
            return exc, time.perf_counter() - began
        self.rendered_ok = True
        return made, time.perf_counter() - began

    def rendered(self, job: Job) -> Rendered | Exception:
        """``job``'s email (or what rendering it raised). When it is not made yet, it is
        made together with the next jobs waiting, ``ahead`` in all, one after the other:
        rendered between sends, each email cost a fifth to a third more CPU than
        rendered back to back (its code and caches pushed out of the processor's caches
        by the sending in between). Each job still goes to the transport from its own
        sender, in the order claimed, and a stop still gives back every job not handed
        over, rendered or not."""
        hit = self.ready.pop(id(job), None)
        if hit is not None:
            self.shift[id(job)] = hit[2]
            return hit[1]
        todo = [job]
        for other in self.queue.waiting(2 * self.ahead):
            if len(todo) >= self.ahead:
                break
            if other is not None and id(other) not in self.ready:
                todo.append(other)
        mine: Rendered | Exception | None = None
        others = 0.0
        for one in todo:
            made, seconds = self._make(one)
            if one is job:
                mine = made
            else:
                self.ready[id(one)] = (one, made, seconds)
                others += seconds
        if others:
            self.shift[id(job)] = -others
        assert mine is not None
        return mine

    async def send(self, job: Job, rendered: Rendered) -> Outcome:
        """Hand one message to the transport, trying a transient failure again after a
        backoff, ``max_attempts`` times in all; then it is deferred (see the module)."""
        attempts, last, bug = self.t.max_attempts, "", False
        for attempt in range(attempts):
            await self.limiter.acquire()
            if self.stopping():  # never start a new attempt once asked to stop
                return Outcome(job, RELEASED, error=last)
            # nor one the ledger cannot record (waited for first: a row held then may
            # have lapsed meanwhile, which the next check sees)
            if self.ledger_failing and await self.ledger_down():
                return Outcome(job, RELEASED, error=last)
            if not self.may_send(job):  # nor with a row that may not be ours any more
                self.given_back += 1
                return Outcome(job, RELEASED, error=last)
            retry_after = None
            try:
                mid = await self.transport.send(rendered.message)
                self.sender_strikes = 0
                self.accepted, self.held_back = True, 0
                return Outcome(job, OutcomeStatus.SENT, message_id=mid, rendered=rendered)
            except TransportError as exc:
                last, bug = str(exc), False
                if exc.sender:
                    self.sender_strikes += 1
                    if exc.permanent or self.sender_strikes >= attempts:
                        self.fail(exc)  # ours: the row goes back, the run stops
                        return Outcome(job, RELEASED, error=last)
                elif exc.permanent and exc.content and not await self.edition_accepted():
                    return self.refused_for_what_it_is(job, exc)
                elif exc.permanent and exc.content:  # this reader's own: see the module
                    return Outcome(job, OutcomeStatus.FAILED, error=last, permanent=True,
                                   reason=REFUSED_CONTENT, rendered=rendered)
                elif exc.permanent:
                    return Outcome(job, OutcomeStatus.FAILED, error=last, permanent=True,
                                   bounce=exc.bounce, rendered=rendered)
                elif exc.later:  # greylisting lasts minutes: retrying now cannot help
                    return self.deferred(job, last, rendered)
                elif exc.unanswered:  # the server may have it: never again in this run
                    self.sender_strikes += 1  # and a server that answers none is ours
                    if self.sender_strikes >= attempts:
                        self.fail(TransportError(f"{last} ({attempts} messages in a row)",
                                                 sender=True))
                    return self.deferred(job, last, rendered)
                retry_after = exc.retry_after
            except Exception as exc:  # a transport bug: record it, keep the edition going
                last, bug = f"{type(exc).__name__}: {exc}", True
            if attempt + 1 < attempts:
                delivery_retry(last)
                await self.sleep(backoff_delay(attempt, self.t.backoff_seconds, retry_after))
        if bug:  # not the server's answer: failed (transient), a rerun tries it again
            return Outcome(job, OutcomeStatus.FAILED,
                           error=f"{last} (after {attempts} attempts)", rendered=rendered)
        return self.deferred(job, f"{last} (after {attempts} attempts)", rendered)

    async def edition_accepted(self, *, again: bool = False) -> bool:
        """Whether the mail server has accepted a message of this edition: in this run,
        or before (another process, an earlier run: the ledger's sent rows, asked on
        the first refusal that needs to know, and ``again`` as the run ends)."""
        if not self.accepted and (again or not self.asked_ledger):
            self.asked_ledger = True
            has_sent = getattr(self.ledger, "has_sent", None)
            if has_sent is not None:
                with contextlib.suppress(Exception):  # not known: the refusal waits
                    self.accepted = bool(await asyncio.to_thread(has_sent))
        return self.accepted

    def refused_for_what_it_is(self, job: Job, exc: TransportError) -> Outcome:
        """A message refused for its size or content (``TransportError.content``)
        before the server accepted any message of the edition: this reader's email, or
        every email (a size limit below the edition's, a filter refusing its content)?
        Not judged yet, and not failed: a whole edition was failed by a filter the
        operator then fixed. It goes back to the queue; once a message is accepted, it
        is claimed again (a run looks from the start at its end, and the next run
        starts there) and, refused again, failed as this reader's own (not a bounce),
        with the reason ``refused_content``: an operator's requeue (`send` again, the
        console's retry) sends it once the server takes it. ``CONTENT_IN_A_ROW`` of
        them with none accepted stop the run as a fault of the sending side (every
        unsent row pending, as for a refused login): until then one oversized digest at
        the head of the queue stopped every run that reached it, and the readers after
        it were never sent."""
        self.held_back += 1
        self.held_rows += 1
        self.held_why = str(exc)
        if self.held_back >= CONTENT_IN_A_ROW:
            self.fail(self.nothing_accepted())
        return Outcome(job, RELEASED, error=str(exc))

    def nothing_accepted(self) -> TransportError:
        """The stop for messages refused for their size or content with none of the
        run accepted: in a row, or all the run had (a run of a few readers, or one
        reader left, ends without reaching ``CONTENT_IN_A_ROW``, and must not end
        saying nothing with its rows pending)."""
        n = self.held_back
        return TransportError(
            f"{self.held_why} ({n} refusal{'s' if n != 1 else ''} for size or content, "
            "none of the run's messages accepted)", sender=True, permanent=True,
            content=True)

    def deferred(self, job: Job, error: str, rendered: Rendered) -> Outcome:
        """Refused for now: deferred until its next try, or failed when its
        ``retry_hours`` are over."""
        now = self.clock()
        first = job.first_try or now
        when = next_try(self.retry, first, max(job.attempts, 1), now)
        if when is None:
            return Outcome(job, OutcomeStatus.FAILED, rendered=rendered, reason=EXPIRED,
                           error=f"{error}; deferred since {first:%Y-%m-%d %H:%M} UTC, given "
                                 f"up after [delivery] retry_hours = {self.retry.retry_hours:g}")
        return Outcome(job, OutcomeStatus.DEFERRED, error=error, rendered=rendered,
                       first_try=first, next_try=when)

    def counted(self, outcome: Outcome, began: float) -> None:
        self.pending.append(outcome)  # first: whatever fails below, the outcome is recorded
        self.claimed_at.pop(outcome.job.delivery_id, None)  # (no longer held)
        self.report.counts[outcome.status] += 1
        shift = self.shift.pop(id(outcome.job), 0.0)
        if outcome.status == RELEASED:
            return
        if self.edition_id is not None:
            delivery_outcome(self.edition_id, outcome, time.perf_counter() - began + shift)
        if outcome.status == OutcomeStatus.FAILED:
            self.report.error(f"{outcome.job.recipient.email}: {outcome.error}")
        if outcome.next_try is not None and (self.report.next_try is None
                                             or outcome.next_try < self.report.next_try):
            self.report.next_try = outcome.next_try
        if self.on_progress:
            self.on_progress(outcome)

    # ---- recording -----------------------------------------------------------------

    async def flush(self) -> None:
        if self.pending:
            batch = self.pending[:]
            del self.pending[:]
            self.recording += 1
            try:
                await asyncio.to_thread(self.ledger.record, batch)
            except Exception:
                self.pending[:0] = batch  # kept for the next try, never dropped
                self.record_failing = True
                raise
            finally:
                self.recording -= 1
            self.record_failing = False

    async def renewer(self) -> None:
        """Renew the leases of the rows still held as often as the ledger asks
        (``renew_seconds``) until the run is finished. A task of its own: a record
        held up by a lock on another table must not hold the leases up too, or the
        rows it sent would lose them and be sent again by another host. A failed
        renewal is tried at the next turn; when renewals keep failing, sending stops,
        since what is held must not run out of its lease while it is sent."""
        tries = 0
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), self.ledger.renew_seconds)
            if self.finished.is_set():
                return
            began = time.monotonic()
            try:
                await asyncio.to_thread(self.ledger.renew)
                self._held_from(began)
                tries = 0
            except Exception as exc:
                tries += 1
                if tries >= RECORD_TRIES:
                    self.fail(exc)

    async def flusher(self) -> None:
        """Record what is pending every ``FLUSH_SECONDS`` until the run is finished.

        Never cancelled: a record runs in a thread that a cancel would not stop, so the
        delivery could return (and its caller read the ledger) before it committed. A
        failed record (a locked SQLite, a dropped connection) is tried again; when it
        keeps failing, sending stops, since what is sent must also be recorded."""
        patience = self.record_patience
        while not self.finished.is_set():
            # woken early by the end of the run: the last outcomes are recorded (and the
            # run returns) at once, not up to ``FLUSH_SECONDS`` later
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), patience.delay()
                                       if patience.tries else FLUSH_SECONDS)
            try:
                await self.flush()
                patience.succeeded()
            except Exception as exc:
                if patience.failed(exc):
                    self.fail(exc)

    async def final_flush(self) -> None:
        """The last outcomes recorded: waited for until records have failed for
        ``LEDGER_PATIENCE`` since the first failure, whatever stopped the run (a
        database gone as the run ends, or with the mail server, is waited for as one
        gone midway: what is not recorded is sent again by the next run). Records that
        already failed that long (the flusher's) have no patience left: one try."""
        patience = self.record_patience
        while True:
            try:
                await self.flush()
                patience.succeeded()
                return
            except Exception as exc:
                if patience.failed(exc):
                    raise
                await asyncio.sleep(patience.delay())

    # ---- claiming and sending --------------------------------------------------------

    async def claim_ahead(self) -> None:
        # The first claim is one job per sender: the connections start on it while the
        # first whole batch is claimed (a batch takes a while to claim, longer when
        # another process is claiming its first at the same moment).
        n = min(self.batch, self.senders)
        try:
            while not self.stopping():
                if self.lease_lapsed():  # no more rows to hold while leases may lapse
                    await asyncio.sleep(FLUSH_SECONDS)
                    continue
                began = time.monotonic()
                jobs = await self.claim(n)
                n = self.batch
                if not jobs:
                    self.give_back_if_abandoned()
                    # Once the senders are done with what they hold: after a lapse the
                    # rows given back are claimed again, and so are rows held back for
                    # their size or content, to be judged now that the server has
                    # accepted a message of the edition (one held back by a message
                    # still in flight as the claims ran out too).
                    while (not self.queue.empty() or self.in_hand) and not self.stopping():
                        await asyncio.sleep(END_POLL)
                    lapsed = self.lapse_ended is not None and self.given_back
                    held = self.held_rows and self.accepted
                    if not (lapsed or held) or self.stopping():
                        break
                    # their releases recorded first, so that the claim finds them
                    while (self.pending or self.recording) and not self.stopping():
                        await asyncio.sleep(FLUSH_SECONDS)
                    if lapsed:
                        self.given_back = 0
                    if held:
                        self.held_rows = 0
                    continue
                if self.held_until is None:  # later claims' leases end later
                    self._held_from(began)
                for job in jobs:  # once stopped, the senders give these back (released)
                    self.claimed_at[job.delivery_id] = began
                    await self.queue.put(job)
        finally:
            for _ in range(self.senders):
                await self.queue.put(None)

    def give_back_if_abandoned(self) -> None:
        """When the claim found none because the operator abandoned the edition, the
        jobs claimed ahead and waiting for a sender go back to the ledger (which skips
        them with the reason) rather than out; those a sender has taken finish and are
        recorded as they end. Once a run, at its last claim: nothing per message."""
        abandoned = getattr(self.ledger, "abandoned", None)
        if not abandoned:
            return
        self.report.abandoned = abandoned
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job is not None:
                self.ready.pop(id(job), None)
                self.counted(Outcome(job, RELEASED), time.perf_counter())

    async def claim(self, n: int) -> list[Job]:
        """A claim of ``n`` rows, tried again (backing off) as a failed record is; when
        it keeps failing the run stops, and the jobs claimed before are given back, not
        sent, since the ledger that would record them is gone."""
        patience = _Patience()
        while True:
            try:
                jobs: list[Job] = await asyncio.to_thread(self.ledger.claim, n)
            except Exception as exc:
                self.claim_failing = True
                if self.stopping():  # asked to stop (a signal) meanwhile: no more claims
                    return []
                if patience.failed(exc):
                    self.fail(exc)
                    raise
                await asyncio.sleep(patience.delay())
                continue
            self.claim_failing = False
            return jobs

    async def sender(self) -> None:
        while (job := await self.queue.get()) is not None:
            began = time.perf_counter()  # one of ``concurrency`` senders has taken it
            self.in_hand += 1
            try:
                outcome = await self.deliver_one(job)
                try:
                    self.counted(outcome, began)
                except Exception as exc:  # e.g. a progress callback's disk is full: stop
                    self.fail(exc)        # here, give the rest back, then raise it
            finally:
                self.in_hand -= 1

    async def open(self) -> None:
        """Open the transport (an SMTP transport proves one connection and its login
        here, before any row is claimed): a failure of ours stops the run at once when
        permanent, after ``max_attempts`` tries otherwise."""
        for attempt in range(self.t.max_attempts):
            try:
                await self.transport.open()
                return
            except TransportError as exc:
                if exc.permanent or attempt + 1 == self.t.max_attempts:
                    raise self.stopped(exc) from None
                delivery_retry(str(exc))
                await self.sleep(backoff_delay(attempt, self.t.backoff_seconds,
                                               exc.retry_after))

    def stopped(self, exc: TransportError) -> SendingStopped:
        return sending_stopped(str(exc), self.report.counts[OutcomeStatus.SENT],
                               edition_only=exc.content)

    async def run(self) -> DeliverReport:
        started = time.monotonic()
        await self.open()
        flush_task = asyncio.create_task(self.flusher())
        renew_task = asyncio.create_task(self.renewer())
        claims = asyncio.create_task(self.claim_ahead())
        tasks = [claims, *(asyncio.create_task(self.sender()) for _ in range(self.senders))]
        try:
            # The senders end when the claims do (a failed claim too: every job already
            # claimed is still sent or given back first), then a claim's error is raised.
            await asyncio.gather(*tasks[1:])
            await claims
            if (self.held_back and self.failure is None and not self.stop.requested
                    and not await self.edition_accepted(again=True)):
                # (asked again: another process may have sent one meanwhile, and the
                # rows held back then wait for it, or for the next run, to judge them)
                self.fail(self.nothing_accepted())
        finally:
            for task in tasks:
                task.cancel()
            self.finished.set()
            try:
                await renew_task
                await flush_task
                await self.final_flush()
            finally:
                await self.transport.close()
        if isinstance(self.failure, TransportError) and self.failure.sender:
            raise self.stopped(self.failure) from None
        if self.failure is not None:
            raise self.failure
        self.report.seconds = time.monotonic() - started
        self.report.stopped_by = self.stop.signum
        return self.report


def _sent_last_hour(ledger: Ledger, t: TransportConfig) -> list[float]:
    """The last hour's sends an hourly limit counts (a ledger that keeps them: the
    database's), this loop's share of them when several processes share the limit."""
    recent = getattr(ledger, "sent_last_hour", None)
    if not t.rate_per_hour or recent is None:
        return []
    sharers = max(1, int(getattr(ledger, "sharers", 1) or 1))
    ages: list[float] = recent(math.ceil(t.rate_per_hour * sharers))
    return ages[::sharers]


def sending_stopped(reason: str, sent: int, *, edition_only: bool = False) -> SendingStopped:
    """The one line said when a fault of ours stopped sending (``sent``: by every
    process of the run)."""
    error = SendingStopped(
        f"sending stopped: {reason} (a fault of the sending side, not the recipients': "
        f"sent {sent} before stopping, none marked failed; every unsent message is "
        "pending again, or deferred if the server was cut off while taking it "
        "(`newsletter status` says when it is tried), and is sent by `newsletter send` "
        "once this is fixed)")
    error.reason, error.sent, error.edition_only = reason, sent, edition_only
    return error


def run_async(coro: Any) -> Any:
    """``asyncio.run``, also from code that already runs inside an event loop (a web
    handler, a Playwright session): then the run gets a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


