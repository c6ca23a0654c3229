"""Delivery: send every job a ledger hands out, with retries and a rate limit, and
record each outcome soon after it happens. Send and preview both run this."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from newsletter.config import TransportConfig
from newsletter.delivery.ledger import LEASE_SECONDS, RELEASED, Ledger, Outcome, OutcomeStatus
from newsletter.delivery.plan import Job
from newsletter.delivery.ratelimit import RateLimiter
from newsletter.delivery.shutdown import Shutdown
from newsletter.errors import TransportError
from newsletter.observe import delivery_outcome, delivery_retry
from newsletter.render.renderer import Rendered
from newsletter.retry import backoff_delay
from newsletter.transports.base import Transport

FLUSH_SECONDS = 0.05
RECORD_TRIES = 5  # a failing record is tried this often (backing off) before sending stops
# ---- delivery ------------------------------------------------------------------------


@dataclass
class DeliverReport:
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: int = 0  # the signal that stopped claiming (0: ran to the end)


class Renders(Protocol):
    """What delivery needs of an opened edition: one job's email."""

    def render(self, job: Job) -> Rendered: ...


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
                  shutdown: Shutdown | None = None) -> DeliverReport:
    """Send every job the ledger hands out; record each outcome soon after it happens.

    When ``shutdown`` is requested (SIGTERM/SIGINT), no more rows are claimed, jobs
    not yet handed to the transport are released back to ``pending``, and messages
    already with the server finish and are recorded before this returns."""
    run = _Run(t, ledger, ctx, transport, on_progress=on_progress, sleep=sleep,
               shutdown=shutdown or Shutdown())
    return await run.run()


class _Run:
    """One delivery: a claimer feeding ``concurrency`` senders through a bounded queue,
    and a flusher writing their outcomes to the ledger. What they share is here, by
    name: the outcomes not yet recorded (``pending``) and the first error that ends the
    run early (``failure``)."""

    def __init__(self, t: TransportConfig, ledger: Ledger, ctx: Renders,
                 transport: Transport, *, on_progress: Callable[[Outcome], None] | None,
                 sleep: Callable[[float], Any], shutdown: Shutdown) -> None:
        self.t = t
        self.ledger = ledger
        self.ctx = ctx
        self.transport = transport
        self.on_progress = on_progress
        self.sleep = sleep
        self.stop = shutdown
        self.limiter = RateLimiter(t.rate_per_second, t.rate_per_hour)
        self.report = DeliverReport()
        self.pending: list[Outcome] = []  # outcomes not yet recorded
        self.failure: Exception | None = None  # the first error that ends the run early
        self.finished = asyncio.Event()  # set once every sender and the claimer ended
        self.batch = claim_batch(t)
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=self.batch)
        self.senders = max(1, t.concurrency)
        # Metrics and a log line per outcome for a real edition; a preview (no edition)
        # has none.
        self.edition_id = getattr(getattr(ledger, "edition", None), "id", None)

    def fail(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = exc

    def stopping(self) -> bool:
        return self.stop.requested or self.failure is not None

    # ---- one job -------------------------------------------------------------------

    async def deliver_one(self, job: Job) -> Outcome:
        if self.stopping():
            return Outcome(job, RELEASED)
        try:
            rendered = self.ctx.render(job)
        except Exception as exc:  # a template bug must not lose the row
            return Outcome(job, OutcomeStatus.FAILED, error=f"render: {exc}", permanent=True)
        return await self.send(job, rendered)

    async def send(self, job: Job, rendered: Rendered) -> Outcome:
        """Hand one message to the transport, trying a transient failure again after a
        backoff, ``max_attempts`` times in all."""
        attempts, last = self.t.max_attempts, ""
        for attempt in range(attempts):
            await self.limiter.acquire()
            if self.stopping():  # never start a new attempt once asked to stop
                return Outcome(job, RELEASED, error=last)
            retry_after = None
            try:
                mid = await self.transport.send(rendered.message)
                return Outcome(job, OutcomeStatus.SENT, message_id=mid, rendered=rendered)
            except TransportError as exc:
                last = str(exc)
                if exc.permanent:
                    return Outcome(job, OutcomeStatus.FAILED, error=last, permanent=True,
                                   bounce=exc.bounce, rendered=rendered)
                retry_after = exc.retry_after
            except Exception as exc:  # a transport bug: record it, keep the edition going
                last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                delivery_retry(last)
                await self.sleep(backoff_delay(attempt, self.t.backoff_seconds, retry_after))
        return Outcome(job, OutcomeStatus.FAILED, error=f"{last} (after {attempts} attempts)",
                       rendered=rendered)

    def counted(self, outcome: Outcome, began: float) -> None:
        self.pending.append(outcome)  # first: whatever fails below, the outcome is recorded
        self.report.counts[outcome.status] += 1
        if outcome.status == RELEASED:
            return
        if self.edition_id is not None:
            delivery_outcome(self.edition_id, outcome, time.perf_counter() - began)
        if outcome.status == OutcomeStatus.FAILED and len(self.report.errors) < 20:
            self.report.errors.append(f"{outcome.job.recipient.email}: {outcome.error}")
        if self.on_progress:
            self.on_progress(outcome)

    # ---- recording -----------------------------------------------------------------

    async def flush(self) -> None:
        if self.pending:
            batch = self.pending[:]
            del self.pending[:]
            try:
                await asyncio.to_thread(self.ledger.record, batch)
            except Exception:
                self.pending[:0] = batch  # kept for the next try, never dropped
                raise

    async def flusher(self) -> None:
        """Record what is pending every ``FLUSH_SECONDS`` until the run is finished.

        Never cancelled: a record runs in a thread that a cancel would not stop, so the
        delivery could return (and its caller read the ledger) before it committed. A
        failed record (a locked SQLite, a dropped connection) is tried again; when it
        keeps failing, sending stops, since what is sent must also be recorded."""
        tries = 0
        while not self.finished.is_set():
            await asyncio.sleep(backoff_delay(min(tries, 6), FLUSH_SECONDS) if tries
                                else FLUSH_SECONDS)
            try:
                await self.flush()
                tries = 0
            except Exception as exc:
                tries += 1
                if tries >= RECORD_TRIES:
                    self.fail(exc)

    async def final_flush(self) -> None:
        for attempt in range(RECORD_TRIES):
            try:
                await self.flush()
                return
            except Exception:
                if attempt + 1 == RECORD_TRIES:
                    raise
                await asyncio.sleep(backoff_delay(attempt, FLUSH_SECONDS))

    # ---- claiming and sending --------------------------------------------------------

    async def claim_ahead(self) -> None:
        try:
            while not self.stopping():
                jobs = await asyncio.to_thread(self.ledger.claim, self.batch)
                if not jobs:
                    break
                for job in jobs:  # once stopped, the senders give these back (released)
                    await self.queue.put(job)
        finally:
            for _ in range(self.senders):
                await self.queue.put(None)

    async def sender(self) -> None:
        while (job := await self.queue.get()) is not None:
            began = time.perf_counter()  # one of ``concurrency`` senders has taken it
            outcome = await self.deliver_one(job)
            try:
                self.counted(outcome, began)
            except Exception as exc:  # e.g. a progress callback's disk is full: stop
                self.fail(exc)        # here, give the rest back, then raise it

    async def run(self) -> DeliverReport:
        started = time.monotonic()
        await self.transport.open()
        flush_task = asyncio.create_task(self.flusher())
        claims = asyncio.create_task(self.claim_ahead())
        tasks = [claims, *(asyncio.create_task(self.sender()) for _ in range(self.senders))]
        try:
            # The senders end when the claims do (a failed claim too: every job already
            # claimed is still sent or given back first), then a claim's error is raised.
            await asyncio.gather(*tasks[1:])
            await claims
        finally:
            for task in tasks:
                task.cancel()
            self.finished.set()
            try:
                await flush_task
                await self.final_flush()
            finally:
                await self.transport.close()
        if self.failure is not None:
            raise self.failure
        self.report.seconds = time.monotonic() - started
        self.report.stopped_by = self.stop.signum
        return self.report


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


