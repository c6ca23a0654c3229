"""Edition runs: plan the ledger, then deliver from it. No provider imports here.

    edition (idempotent) → plan: one ledger row per active subscriber with its picks
                         → deliver: claim rows under a lease, render, send with
                           retries and a rate limit, record the outcome

The ledger is the truth. A row is claimed (``sending``, with a lease naming
host:pid) before its message is rendered, and marked ``sent`` in the same
transaction that records the papers it carried. A rerun takes back rows whose
lease holder is gone (lease expired, or its process is dead on this host) and
finishes them, so nobody is skipped; a row already ``sent`` is never sent again.
The one window for a duplicate is a crash after the server accepted a message
and before the ledger commit that follows it (a few tens of milliseconds).

Preview runs exactly this code with a ``MemoryLedger`` and a file transport.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy import Engine, Table, bindparam, false, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from .config import Settings
from .db import session_scope
from .digest import PaperInfo
from .errors import TransportError
from .fetch import backoff_delay
from .links import LinkMaker, Signer, secret_keys
from .models import Delivery, Edition, Entry, Event, SentEntry, Subscriber, utcnow
from .ratelimit import RateLimiter
from .render import Recipient, Rendered, Renderer
from .selection import Selection
from .transports.base import Transport

DELIVERIES = cast(Table, Delivery.__table__)  # Core table, for executemany updates
LEASE_SECONDS = 120
FLUSH_SECONDS = 0.05


# ---- editions ----------------------------------------------------------------------


def get_or_create_edition(engine: Engine, day: dt.date, slot: str = "") -> Edition:
    """The edition for (day, slot); created once, however many processes ask."""
    with session_scope(engine) as s:
        found = s.scalar(select(Edition).where(Edition.day == day, Edition.slot == slot))
        if found is not None:
            return found
    try:
        with session_scope(engine) as s:
            now = utcnow()
            edition = Edition(day=day, slot=slot, created_at=now, cutoff=now)
            s.add(edition)
        return edition
    except IntegrityError:  # another process created it first
        with session_scope(engine) as s:
            return s.scalars(select(Edition).where(Edition.day == day, Edition.slot == slot)).one()


# ---- planning ----------------------------------------------------------------------


@dataclass
class Job:
    """One delivery to make."""

    recipient: Recipient
    entry_ids: list[str]
    trending: bool
    delivery_id: int | None = None
    attempts: int = 0


@dataclass
class PlanReport:
    planned: int = 0
    skipped: int = 0
    already: int = 0


def plan_jobs(selection: Selection, subscribers: Iterator[tuple[int, str, str, str]],
              k: int) -> Iterator[list[Job]]:
    """Rank every subscriber (chunked) and yield their jobs; empty picks are jobs too."""
    people: dict[int, tuple[str, str, str]] = {}

    def keyed() -> Iterator[tuple[int, str]]:
        for sub_id, email, name, keywords in subscribers:
            people[sub_id] = (email, name, keywords)
            yield sub_id, keywords

    for chunk in selection.ranker.rank(keyed(), sent=selection.sent, k=k):
        jobs = []
        for row, sub_id in enumerate(chunk.keys):
            email, name, keywords = people.pop(sub_id)
            picks = [selection.entries[i].id for i in chunk.picks[row] if i >= 0]
            jobs.append(Job(Recipient(sub_id, email, name, keywords), picks,
                            bool(chunk.trending[row])))
        yield jobs


def slot_filter(day: dt.date, utc_hour: int, zones: Sequence[str]) -> list[tuple[str, int]]:
    """(time zone, local hour) pairs that are ``utc_hour`` UTC on ``day``: the subscribers
    whose send hour falls in this slot."""
    from zoneinfo import ZoneInfo

    moment = dt.datetime(day.year, day.month, day.day, utc_hour, tzinfo=dt.UTC)
    return [(tz, moment.astimezone(ZoneInfo(tz)).hour) for tz in zones]


def subscriber_rows(session: Any, *, email: str | None = None,
                    unsent_day: dt.date | None = None,
                    slot: Sequence[tuple[str, int]] | None = None,
                    ) -> Iterator[tuple[int, str, str, str]]:
    """Active subscribers to plan: none who already has an edition of ``unsent_day``
    (one newsletter day per person, whatever the slot), only those in ``slot``."""
    q = select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.keywords)
    q = q.where(Subscriber.email == email) if email else q.where(Subscriber.status == "active")
    if unsent_day is not None:
        had = (select(Delivery.subscriber_id).join(Edition, Edition.id == Delivery.edition_id)
               .where(Edition.day == unsent_day))
        q = q.where(Subscriber.id.not_in(had))
    if slot is not None:
        q = q.where(or_(false(), *[(Subscriber.tz == tz) & (Subscriber.send_hour == hour)
                                   for tz, hour in slot]))
    for row in session.execute(q.order_by(Subscriber.id).execution_options(yield_per=5000)):
        yield row[0], row[1], row[2], row[3]


# ---- ledgers -----------------------------------------------------------------------


@dataclass
class Outcome:
    job: Job
    status: str  # sent | failed | skipped
    message_id: str = ""
    error: str = ""
    permanent: bool = False
    bounce: bool = False
    rendered: Rendered | None = None


class Ledger(Protocol):
    def claim(self, n: int) -> list[Job]: ...
    def record(self, outcomes: Sequence[Outcome]) -> None: ...


class MemoryLedger:
    """A ledger that lives and dies with the process: what a preview uses."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.queue = list(jobs)
        self.outcomes: list[Outcome] = []

    def claim(self, n: int) -> list[Job]:
        batch, self.queue = self.queue[:n], self.queue[n:]
        return batch

    def record(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes.extend(outcomes)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _insert_for(engine: Engine) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing``."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DbLedger:
    """The deliveries table as a work queue, claimed under leases."""

    def __init__(self, engine: Engine, edition: Edition, owner: str | None = None,
                 lease_seconds: int = LEASE_SECONDS) -> None:
        self.engine = engine
        self.edition = edition
        self.owner = owner or lease_owner()
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.host = socket.gethostname()

    def plan(self, jobs: Iterator[list[Job]]) -> PlanReport:
        """Write one pending row per job, a chunk per transaction (a crash keeps what
        was planned; the rerun plans only subscribers without a row)."""
        report = PlanReport()
        insert = _insert_for(self.engine)
        for chunk in jobs:
            rows = []
            now = utcnow()
            for j in chunk:
                empty = not j.entry_ids
                rows.append({
                    "edition_id": self.edition.id, "subscriber_id": j.recipient.id,
                    "entry_ids": j.entry_ids, "details": {"trending": j.trending},
                    "status": "skipped" if empty else "pending",
                    "reason": "no papers matched and no trending section" if empty else "",
                    "attempts": 0, "last_error": "", "message_id": "", "lease_owner": "",
                    "created_at": now, "updated_at": now,
                })
                report.skipped += empty
                report.planned += not empty
            if rows:
                with session_scope(self.engine) as s:
                    stmt = insert(Delivery).on_conflict_do_nothing(
                        index_elements=["edition_id", "subscriber_id"])
                    s.execute(stmt, rows)
        with session_scope(self.engine) as s:
            s.execute(update(Edition).where(Edition.id == self.edition.id)
                      .values(planned_at=utcnow()))
        return report

    def reclaim(self) -> int:
        """Put back rows whose lease holder is gone: expired, or a dead process here."""
        now = utcnow()
        with session_scope(self.engine) as s:
            owners = s.execute(
                select(Delivery.lease_owner, func.min(Delivery.lease_expires))
                .where(Delivery.edition_id == self.edition.id, Delivery.status == "sending")
                .group_by(Delivery.lease_owner)
            ).all()
            dead = []
            for owner, expires in owners:
                host, _, rest = owner.partition(":")
                pid = rest.partition(":")[0]
                gone_here = host == self.host and pid.isdigit() and not _pid_alive(int(pid))
                if gone_here or (expires is not None and expires < now):
                    dead.append(owner)
            if not dead:
                return 0
            result = s.execute(
                update(Delivery)
                .where(Delivery.edition_id == self.edition.id, Delivery.status == "sending",
                       Delivery.lease_owner.in_(dead))
                .values(status="pending", lease_owner="", lease_expires=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def retry_failed(self) -> int:
        """Transient failures of an earlier run go back in the queue."""
        with session_scope(self.engine) as s:
            result = s.execute(
                update(Delivery)
                .where(Delivery.edition_id == self.edition.id, Delivery.status == "failed",
                       Delivery.reason == "transient")
                .values(status="pending", reason="")
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def claim(self, n: int) -> list[Job]:
        now = utcnow()
        with session_scope(self.engine) as s:
            q = (select(Delivery.id).where(Delivery.edition_id == self.edition.id,
                                           Delivery.status == "pending")
                 .order_by(Delivery.id).limit(n))
            if self.engine.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            ids = list(s.scalars(q))
            if not ids:
                return []
            s.execute(
                update(Delivery).where(Delivery.id.in_(ids), Delivery.status == "pending")
                .values(status="sending", lease_owner=self.owner, lease_expires=now + self.lease,
                        attempts=Delivery.attempts + 1, updated_at=now)
            )
            rows = s.execute(
                select(Delivery, Subscriber)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.id.in_(ids), Delivery.lease_owner == self.owner,
                       Delivery.status == "sending")
                .order_by(Delivery.id)
            ).all()
            jobs = []
            for d, sub in rows:
                if sub.status != "active":
                    d.status, d.reason = "skipped", f"subscriber {sub.status} before delivery"
                    d.lease_owner = ""
                    continue
                jobs.append(Job(Recipient(sub.id, sub.email, sub.name, sub.keywords),
                                list(d.entry_ids), bool((d.details or {}).get("trending")),
                                d.id, d.attempts))
            return jobs

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Outcomes in one transaction: sent rows together with the papers they carried."""
        if not outcomes:
            return
        now = utcnow()
        insert = _insert_for(self.engine)
        sent = [o for o in outcomes if o.status == "sent"]
        failed = [o for o in outcomes if o.status != "sent"]
        # Executemany, guarded by our lease: a row another process took back is not ours.
        mark_sent = (update(DELIVERIES)
                     .where(Delivery.id == bindparam("b_id"),
                            Delivery.lease_owner == self.owner)
                     .values(status="sent", message_id=bindparam("b_mid"), sent_at=now,
                             last_error="", lease_owner="", lease_expires=None, updated_at=now))
        mark_failed = (update(DELIVERIES)
                       .where(Delivery.id == bindparam("b_id"),
                              Delivery.lease_owner == self.owner)
                       .values(status=bindparam("b_status"), last_error=bindparam("b_error"),
                               reason=bindparam("b_reason"), lease_owner="",
                               lease_expires=None, updated_at=now))
        with session_scope(self.engine) as s:
            if sent:
                s.execute(mark_sent, [{"b_id": o.job.delivery_id, "b_mid": o.message_id}
                                      for o in sent])
                s.execute(insert(SentEntry).on_conflict_do_nothing(
                    index_elements=["subscriber_id", "entry_id"]),
                    [{"subscriber_id": o.job.recipient.id, "entry_id": e,
                      "edition_id": self.edition.id, "sent_at": now}
                     for o in sent for e in o.job.entry_ids])
            if failed:
                s.execute(mark_failed, [{
                    "b_id": o.job.delivery_id, "b_status": o.status, "b_error": o.error[:2000],
                    "b_reason": "permanent" if o.permanent else "transient"} for o in failed])
            for o in failed:
                if o.bounce:
                    s.execute(update(Subscriber).where(Subscriber.id == o.job.recipient.id)
                              .values(status="bounced", bounce_count=Subscriber.bounce_count + 1))
                    s.add(Event(subscriber_id=o.job.recipient.id, kind="bounced",
                                detail={"error": o.error[:500], "edition": self.edition.id}))


# ---- delivery ------------------------------------------------------------------------


@dataclass
class DeliverReport:
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


class EditionContext:
    """Per-edition state: the ranking selection (for explanations) and the renderer."""

    def __init__(self, settings: Settings, session: Any, edition: Edition,
                 rows: list[Entry], *, keys: list[str] | None = None) -> None:
        self.selection = Selection.build(settings, session, rows, edition.day)
        keys = keys or secret_keys(settings, session)
        links = LinkMaker(settings, Signer(keys))
        papers = [PaperInfo.of(e, links.paper(e.id)) for e in rows]
        self.index = {e.id: i for i, e in enumerate(rows)}
        self.renderer = Renderer(settings, keys=keys,
                                 day=edition.day, edition_id=edition.id or 0, papers=papers,
                                 acronyms=self.selection.ranker.corpus.acronyms)

    def render(self, job: Job) -> Rendered:
        picks = [self.index[e] for e in job.entry_ids if e in self.index]
        if job.trending:
            explanations: list[Any] = [None] * len(picks)
        else:
            explanations = list(self.selection.ranker.explain_many(job.recipient.keywords, picks))
        return self.renderer.render(job.recipient, picks, explanations, job.trending)


async def deliver(settings: Settings, ledger: Ledger, ctx: EditionContext, transport: Transport,
                  *, on_progress: Callable[[Outcome], None] | None = None,
                  sleep: Callable[[float], Any] = asyncio.sleep) -> DeliverReport:
    """Send every job the ledger hands out; record each outcome soon after it happens."""
    t = settings.transport
    limiter = RateLimiter(t.rate_per_second, t.rate_per_hour)
    gate = asyncio.Semaphore(t.concurrency)
    report = DeliverReport()
    pending: list[Outcome] = []
    started = time.monotonic()

    async def send_one(job: Job) -> Outcome:
        async with gate:
            try:
                rendered = ctx.render(job)
            except Exception as exc:  # a template bug must not lose the row
                return Outcome(job, "failed", error=f"render: {exc}", permanent=True)
            last = ""
            for attempt in range(t.max_attempts):
                await limiter.acquire()
                try:
                    mid = await transport.send(rendered.message)
                    return Outcome(job, "sent", message_id=mid, rendered=rendered)
                except TransportError as exc:
                    last = str(exc)
                    if exc.permanent:
                        return Outcome(job, "failed", error=last, permanent=True,
                                       bounce=exc.bounce, rendered=rendered)
                    if attempt + 1 < t.max_attempts:
                        await sleep(backoff_delay(attempt, t.backoff_seconds, exc.retry_after))
                except Exception as exc:  # a transport bug: record it, keep the edition going
                    last = f"{type(exc).__name__}: {exc}"
                    if attempt + 1 < t.max_attempts:
                        await sleep(backoff_delay(attempt, t.backoff_seconds))
            return Outcome(job, "failed", error=f"{last} (after {t.max_attempts} attempts)",
                           rendered=rendered)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await flush()

    async def flush() -> None:
        if pending:
            batch = pending[:]
            del pending[:]
            await asyncio.to_thread(ledger.record, batch)

    await transport.open()
    flush_task = asyncio.create_task(flusher())
    try:
        batch_size = max(64, t.concurrency * 8)
        while True:
            jobs = await asyncio.to_thread(ledger.claim, batch_size)
            if not jobs:
                break
            for fut in asyncio.as_completed([send_one(j) for j in jobs]):
                outcome = await fut
                pending.append(outcome)
                report.counts[outcome.status] += 1
                if outcome.status == "failed" and len(report.errors) < 20:
                    report.errors.append(f"{outcome.job.recipient.email}: {outcome.error}")
                if on_progress:
                    on_progress(outcome)
            await flush()
    finally:
        flush_task.cancel()
        await flush()
        await transport.close()
    report.seconds = time.monotonic() - started
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


# ---- status ----------------------------------------------------------------------------


def edition_status(engine: Engine, edition: Edition) -> dict[str, Any]:
    with session_scope(engine) as s:
        counts = dict(s.execute(
            select(Delivery.status, func.count()).where(Delivery.edition_id == edition.id)
            .group_by(Delivery.status)).all())
        errors = s.execute(
            select(Subscriber.email, Delivery.status, Delivery.last_error, Delivery.reason)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == edition.id,
                   Delivery.status.in_(["failed", "skipped"]))
            .order_by(Delivery.updated_at.desc()).limit(10)).all()
    return {"edition": edition.id, "day": edition.day.isoformat(), "slot": edition.slot,
            "planned": edition.planned_at is not None,
            "counts": {k: counts.get(k, 0) for k in
                       ("pending", "sending", "sent", "failed", "skipped")},
            "last_errors": [{"email": e, "status": st, "error": err or r}
                            for e, st, err, r in errors]}
