"""Delivery: send every job a ledger hands out, with retries and a rate limit, and
record each outcome soon after it happens. Send and preview both run this."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from newsletter.config import Settings
from newsletter.delivery.edition import EditionContext
from newsletter.delivery.ledger import LEASE_SECONDS, RELEASED, Ledger, Outcome, OutcomeStatus
from newsletter.delivery.plan import Job
from newsletter.delivery.ratelimit import RateLimiter
from newsletter.delivery.shutdown import Shutdown
from newsletter.errors import TransportError
from newsletter.observe import delivery_outcome, delivery_retry
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


async def deliver(settings: Settings, ledger: Ledger, ctx: EditionContext, transport: Transport,
                  *, on_progress: Callable[[Outcome], None] | None = None,
                  sleep: Callable[[float], Any] = asyncio.sleep,
                  shutdown: Shutdown | None = None) -> DeliverReport:
    """Send every job the ledger hands out; record each outcome soon after it happens.

    When ``shutdown`` is requested (SIGTERM/SIGINT), no more rows are claimed, jobs
    not yet handed to the transport are released back to ``pending``, and messages
    already with the server finish and are recorded before this returns."""
    stop = shutdown or Shutdown()
    t = settings.transport
    limiter = RateLimiter(t.rate_per_second, t.rate_per_hour)
    report = DeliverReport()
    pending: list[Outcome] = []
    failure: list[Exception] = []  # the first error that ends this delivery early
    started = time.monotonic()
    # Metrics and a log line per outcome for a real edition; a preview (no edition) has none.
    edition_id = getattr(getattr(ledger, "edition", None), "id", None)

    def stopping() -> bool:
        return stop.requested or bool(failure)

    async def deliver_one(job: Job) -> Outcome:
        if stopping():
            return Outcome(job, RELEASED)
        try:
            rendered = ctx.render(job)
        except Exception as exc:  # a template bug must not lose the row
            return Outcome(job, OutcomeStatus.FAILED, error=f"render: {exc}", permanent=True)
        last = ""
        for attempt in range(t.max_attempts):
            await limiter.acquire()
            if stopping():  # never start a new attempt once asked to stop
                return Outcome(job, RELEASED, error=last)
            try:
                mid = await transport.send(rendered.message)
                return Outcome(job, OutcomeStatus.SENT, message_id=mid, rendered=rendered)
            except TransportError as exc:
                last = str(exc)
                if exc.permanent:
                    return Outcome(job, OutcomeStatus.FAILED, error=last, permanent=True,
                                   bounce=exc.bounce, rendered=rendered)
                if attempt + 1 < t.max_attempts:
                    delivery_retry(last)
                    await sleep(backoff_delay(attempt, t.backoff_seconds, exc.retry_after))
            except Exception as exc:  # a transport bug: record it, keep the edition going
                last = f"{type(exc).__name__}: {exc}"
                if attempt + 1 < t.max_attempts:
                    delivery_retry(last)
                    await sleep(backoff_delay(attempt, t.backoff_seconds))
        return Outcome(job, OutcomeStatus.FAILED,
                       error=f"{last} (after {t.max_attempts} attempts)",
                       rendered=rendered)

    async def flush() -> None:
        if pending:
            batch = pending[:]
            del pending[:]
            try:
                await asyncio.to_thread(ledger.record, batch)
            except Exception:
                pending[:0] = batch  # kept for the next try, never dropped
                raise

    finished = asyncio.Event()

    async def flusher() -> None:
        # Never cancelled: a record runs in a thread that a cancel would not stop, so the
        # delivery could return (and its caller read the ledger) before it committed.
        # A failed record (a locked SQLite, a dropped connection) is tried again; when
        # it keeps failing, sending stops, since what is sent must also be recorded.
        tries = 0
        while not finished.is_set():
            await asyncio.sleep(backoff_delay(min(tries, 6), FLUSH_SECONDS) if tries
                                else FLUSH_SECONDS)
            try:
                await flush()
                tries = 0
            except Exception as exc:
                tries += 1
                if tries >= RECORD_TRIES and not failure:
                    failure.append(exc)

    async def final_flush() -> None:
        for attempt in range(RECORD_TRIES):
            try:
                await flush()
                return
            except Exception:
                if attempt + 1 == RECORD_TRIES:
                    raise
                await asyncio.sleep(backoff_delay(attempt, FLUSH_SECONDS))

    def counted(outcome: Outcome, began: float) -> None:
        pending.append(outcome)  # first: whatever fails below, the outcome is recorded
        report.counts[outcome.status] += 1
        if outcome.status == RELEASED:
            return
        if edition_id is not None:
            delivery_outcome(edition_id, outcome, time.perf_counter() - began)
        if outcome.status == OutcomeStatus.FAILED and len(report.errors) < 20:
            report.errors.append(f"{outcome.job.recipient.email}: {outcome.error}")
        if on_progress:
            on_progress(outcome)

    # Claims run ahead of the sending: the next batch is claimed (in a thread) while this
    # one goes out, so the connections never wait for the database between batches, nor
    # for a batch's slowest message before the next one starts. At most two batches wait
    # claimed; under a rate limit a batch is small enough that both go out well within
    # their lease, so no other process reclaims a row this one is about to send.
    batch_size = max(64, t.concurrency * 8)
    rate = min(r for r in (t.rate_per_second, t.rate_per_hour / 3600, math.inf) if r > 0)
    if rate < math.inf:
        batch_size = max(1, min(batch_size, int(rate * LEASE_SECONDS / 4)))
    queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=batch_size)
    senders = max(1, t.concurrency)

    async def claim_ahead() -> None:
        try:
            while not stopping():
                jobs = await asyncio.to_thread(ledger.claim, batch_size)
                if not jobs:
                    break
                for job in jobs:  # once stopped, the senders give these back (released)
                    await queue.put(job)
        finally:
            for _ in range(senders):
                await queue.put(None)

    async def sender() -> None:
        while (job := await queue.get()) is not None:
            began = time.perf_counter()  # one of ``concurrency`` senders has taken it
            outcome = await deliver_one(job)
            try:
                counted(outcome, began)
            except Exception as exc:  # e.g. a progress callback's disk is full: stop
                if not failure:      # here, give the rest back, then raise it
                    failure.append(exc)

    await transport.open()
    flush_task = asyncio.create_task(flusher())
    claims = asyncio.create_task(claim_ahead())
    tasks = [claims, *(asyncio.create_task(sender()) for _ in range(senders))]
    try:
        # The senders end when the claims do (a failed claim too: every job already
        # claimed is still sent or given back first), then a claim's error is raised.
        await asyncio.gather(*tasks[1:])
        await claims
    finally:
        for task in tasks:
            task.cancel()
        finished.set()
        try:
            await flush_task
            await final_flush()
        finally:
            await transport.close()
    if failure:
        raise failure[0]
    report.seconds = time.monotonic() - started
    report.stopped_by = stop.signum
    return report


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


