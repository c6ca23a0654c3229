"""The ledger: the deliveries table as the work queue of an edition, and the
memory ledger a preview uses in its place. No provider imports here.

    ``DbLedger.plan``: one row per subscriber with their picks (pending, or skipped
                       when there is nothing to send)
    ``DbLedger.claim``: rows taken under a lease (sending), handed to ``deliver``
    ``DbLedger.record``: each outcome written soon after it happens
    ``DbLedger.abandon``: the operator stops the edition for good (``newsletter abandon``)

The ledger is the truth. A row is claimed (``sending``, with a lease naming
host:pid) before its message is rendered, and marked ``sent`` in the same
transaction that records the papers it carried. A rerun takes back rows whose
lease holder is gone (lease expired, or its process is dead on this host) and
finishes them, so nobody is skipped; a row already ``sent`` is never sent again.
The one window for a duplicate is a crash after the server accepted a message
and before the ledger commit that follows it (a few tens of milliseconds).

An abandoned edition (``Edition.abandoned_at``) is the ledger's to keep: every
transaction that plans rows, claims them or puts them back in the queue reads it
(``_abandoned``), so no caller (`send`, a slot, the retry job, a worker, the console)
has to, and a row that would go back to ``pending`` or ``deferred`` is ``skipped``
with the operator's reason instead.

A preview runs the same delivery with a ``MemoryLedger`` and a file transport.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Engine,
    Table,
    bindparam,
    case,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from newsletter.delivery.plan import Job, PlanReport
from newsletter.render.renderer import Recipient, Rendered
from newsletter.store import lifecycle
from newsletter.store.db import connection_scope, session_scope
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    SentEntry,
    Subscriber,
    SubscriberStatus,
    utcnow,
)

DELIVERIES = cast(Table, Delivery.__table__)  # Core table, for executemany updates
SENT_ENTRIES = cast(Table, SentEntry.__table__)  # Core: no ORM bookkeeping per row
LEASE_SECONDS = 120
ABANDONED = "abandoned by the operator"


def abandoned_reason(reason: str) -> str:
    """What an abandoned edition's skipped rows say (`status`, the console's ledger)."""
    return f"{ABANDONED}: {reason}" if reason else ABANDONED


class OutcomeStatus(StrEnum):
    """How one job ended. The first four are also the row states a ledger records;
    ``released`` is not a row state: the job was claimed, never started (or stopped
    by a fault of ours), and goes back to ``pending``."""

    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"
    RELEASED = "released"


RELEASED = OutcomeStatus.RELEASED
# ---- ledgers -----------------------------------------------------------------------


@dataclass
class Outcome:
    job: Job
    status: OutcomeStatus
    message_id: str = ""
    error: str = ""
    permanent: bool = False
    bounce: bool = False
    rendered: Rendered | None = None
    reason: str = ""  # a failed row's reason when not permanent/transient ("expired")
    first_try: dt.datetime | None = None  # deferred: first refused for now (naive UTC)
    next_try: dt.datetime | None = None  # deferred: when it is due again (naive UTC)


@dataclass
class Abandoned:
    """What ``DbLedger.abandon`` did: the edition marked (or ``already`` so, or left
    alone as ``complete``: nothing of it was left to send), and its rows skipped by
    the state they were in (``sending``: held by a run that is gone). ``in_flight``:
    rows a live run holds, which it sends (recorded as sent) or gives back (skipped)."""

    at: dt.datetime | None
    by: str = ""
    reason: str = ""
    already: bool = False
    complete: bool = False
    skipped: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0


class Ledger(Protocol):
    def claim(self, n: int) -> list[Job]: ...
    def record(self, outcomes: Sequence[Outcome]) -> None: ...
    def renew(self) -> int: ...
    @property
    def renew_seconds(self) -> float: ...


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

    def renew(self) -> int:
        return 0  # nobody else can take these jobs

    @property
    def renew_seconds(self) -> float:
        return math.inf


def _shown(outcome: Outcome) -> str | None:
    """The sent email's record (``delivery/shown.py``), None when none was made."""
    return outcome.rendered.shown or None if outcome.rendered is not None else None


TRANSIENT = "transient"  # a failed row's reason when the next run tries it again
# A failed row's reason when the server refused the message for its size or content
# after it had accepted others of the edition: this reader's own (a digest larger than
# the rest, a link a filter blocks), not a bounce, and not tried again by itself. Apart
# from ``permanent`` so that the operator can have it sent again once the server takes
# it (its size limit raised, its filter fixed): what ``requeued_failure`` puts back.
REFUSED_CONTENT = "refused_content"
# The failed rows' reasons an operator's requeue puts back in the queue (a `send` of the
# edition's day and slot, the console's retry: ``DbLedger.retry_failed``).
REQUEUED_REASONS = (TRANSIENT, REFUSED_CONTENT)
# A failed row's reason when its server refused it for now until ``retry_hours`` had
# passed (``deliver``): not tried again by a rerun, which would only meet the same
# refusal, but by the operator's own retry (the console's button, ``requeue_failed``),
# after an outage has been put right.
EXPIRED = "expired"


def requeued_failure(*, by_operator: bool = False) -> ColumnElement[bool]:
    """The failed rows a requeue puts back in the queue (``REQUEUED_REASONS``, and
    with ``by_operator`` the ``EXPIRED`` ones too): what ``retry_failed`` requeues,
    ``abandon`` counts as left to send and a preview shows as what `send` would send,
    in one place."""
    reasons = (*REQUEUED_REASONS, EXPIRED) if by_operator else REQUEUED_REASONS
    return (Delivery.status == DeliveryStatus.FAILED) & Delivery.reason.in_(reasons)


def lease_gone(owner: str, expires: dt.datetime | None, now: dt.datetime,
               host: str | None = None) -> bool:
    """Whether rows leased by ``owner`` may be taken back: its process on this host
    (``host``: this machine's name) is gone, or its lease ran out and it is not a
    process of this host that still runs. A delivering loop renews its leases four
    times a lease (``DbLedger.renew``), but a process here that cannot (its loop
    blocked, its database out of reach for a while) may still be sending them, and
    taking them back sent each twice. On another host only the lease can tell: there
    the renewal is what keeps a batch whose messages wait up to ``[smtp] data_timeout``
    for their answer from being sent again by a second worker."""
    pid = held_here(owner, host or socket.gethostname())
    if pid is not None:
        return not _pid_alive(pid)
    return expires is not None and expires < now


def held_here(owner: str, host: str) -> int | None:
    """The process id of a lease ``owner`` (``host:pid:nonce``) on ``host``, None for
    an owner on another host (or none that names a process)."""
    name, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return int(pid) if name == host and pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host still runs: a zombie (dead, not yet reaped, as a
    killed process whose parent died too may stay under an init that does not reap)
    holds no lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):  # no /proc (not Linux): kill's answer
        return True


# One statement per chunk with the rows as arrays: its text never changes, so the driver
# and the server parse it once, where a multi-row VALUES list is a new (and long) text
# for every chunk size and costs more CPU to build and parse than the rows themselves.
_PG_PLAN = text(
    "INSERT INTO deliveries (edition_id, subscriber_id, day, entry_ids, details, status, "
    "reason, attempts, last_error, message_id, lease_owner, created_at, updated_at) "
    "SELECT :edition, v.sid, v.day, CAST(v.entries AS json), CAST(v.details AS json), "
    "v.status, v.reason, 0, '', '', '', :now, :now "
    "FROM unnest(CAST(:sids AS integer[]), CAST(:days AS date[]), CAST(:entries AS text[]), "
    "CAST(:details AS text[]), CAST(:statuses AS text[]), CAST(:reasons AS text[])) "
    "AS v(sid, day, entries, details, status, reason) "
    "ON CONFLICT DO NOTHING RETURNING status")


# A planned row's own values, in the order both statements take them: subscriber, day,
# papers (ids), details, status, reason (the rest of the row is the same for all).
PlanRow = tuple[int, dt.date, list[str], dict[str, Any], str, str]


def _pg_plan_params(edition_id: int, now: dt.datetime,
                    rows: list[PlanRow]) -> dict[str, Any]:
    dumps = json.dumps
    return {"edition": edition_id, "now": now,
            "sids": [r[0] for r in rows], "days": [r[1] for r in rows],
            "entries": [dumps(r[2]) for r in rows],
            "details": [dumps(r[3]) for r in rows],
            "statuses": [r[4] for r in rows],
            "reasons": [r[5] for r in rows]}


# The same for SQLite, the rows in one JSON parameter split by SQLite: an executemany of
# dicts built, bound and converted every column of every row in Python (0.22 s for
# 4,000 rows). The JSON columns are nested in that parameter as JSON, not as strings of
# JSON (each escaped again, quote by quote, by the outer encoding and unescaped by
# SQLite: a tenth of writing a plan): ``json_extract`` of an array or object gives its
# text, which the column stores.
_SQLITE_PLAN = text(
    "INSERT INTO deliveries (edition_id, subscriber_id, day, entry_ids, details, status, "
    "reason, attempts, last_error, message_id, lease_owner, created_at, updated_at) "
    "SELECT :edition, json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'), "
    "json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'), "
    "json_extract(r.value, '$[4]'), json_extract(r.value, '$[5]'), 0, '', '', '', :now, :now "
    "FROM json_each(:rows) AS r WHERE true "
    "ON CONFLICT DO NOTHING RETURNING status").bindparams(bindparam("now", type_=DateTime()))


def _sqlite_plan_params(edition_id: int, now: dt.datetime,
                        rows: list[PlanRow]) -> dict[str, Any]:
    days: dict[dt.date, str] = {}  # (a chunk holds one day, or a few)
    for r in rows:
        if r[1] not in days:
            days[r[1]] = r[1].isoformat()
    return {"edition": edition_id, "now": now, "rows": json.dumps(
        [(sid, days[day], ids, details, status, reason)
         for sid, day, ids, details, status, reason in rows], separators=(",", ":"))}


# The sent rows as one statement, the rows in one JSON parameter (SQLite walks it and
# finds each row by its key): an executemany bound and converted every row in Python,
# while the lock (the whole database's) was held and the sending loop wanted the GIL.
_SQLITE_SENT = text(
    "UPDATE deliveries SET status = :status, message_id = json_extract(r.value, '$[1]'), "
    "sent_at = :now, last_error = '', next_try_at = NULL, "
    "shown = json_extract(r.value, '$[2]'), lease_owner = '', lease_expires = NULL, "
    "updated_at = :now FROM json_each(:rows) AS r "
    "WHERE deliveries.id = json_extract(r.value, '$[0]') "
    "AND deliveries.lease_owner = :owner").bindparams(bindparam("now", type_=DateTime()))


_SQLITE_SENT_ENTRIES = text(
    "INSERT INTO sent_entries (subscriber_id, entry_id, edition_id, sent_at) "
    "SELECT json_extract(p.value, '$[0]'), json_extract(p.value, '$[1]'), :edition, :now "
    "FROM json_each(:pairs) AS p WHERE true "
    "ON CONFLICT (subscriber_id, entry_id) DO NOTHING").bindparams(
        bindparam("now", type_=DateTime()))


REQUEUED = "requeued:"  # a deferred row back in the queue: its lease owner until claimed


def requeued_due(at: dt.datetime, quiet: dt.timedelta, hours: float) -> Any:
    """The deferred rows a run put back in the queue (``requeue_due``) and left there,
    nothing having touched them for ``quiet``: a run killed before it could defer them
    again (``unrequeue``). Due as they were, for the next run to take up as it takes
    up the deferred rows due; the wait leaves a run that has just put them back (a
    `send --queue` before its workers start) its own rows. Not those put back more
    than ``hours`` (``[delivery] retry_hours``) ago: an edition stopped long ago is not
    sent out of the blue (``left_pending``'s rule)."""
    return ((Delivery.status == DeliveryStatus.PENDING) & (Delivery.next_try_at <= at)
            & (Delivery.updated_at <= at - quiet)
            & (Delivery.updated_at > at - dt.timedelta(hours=hours)))


def not_requeued_due(at: dt.datetime, quiet: dt.timedelta, hours: float) -> Any:
    """The other rows (``requeued_due``'s complement, rows with no next try included:
    SQL's NOT of a NULL comparison would leave them out too)."""
    return ((Delivery.status != DeliveryStatus.PENDING) | Delivery.next_try_at.is_(None)
            | (Delivery.next_try_at > at) | (Delivery.updated_at > at - quiet)
            | (Delivery.updated_at <= at - dt.timedelta(hours=hours)))


def end_share(n: int, sharers: int, left: int) -> int:
    """How many rows a claim of ``n`` takes when ``left`` rows are seen ahead (looking
    ``n × sharers`` ahead): ``n`` while a batch for every sharer is left; then half of
    an even split, never under an eighth of a batch (nor under one), so the loops' last
    claims shrink together."""
    if sharers <= 1 or left >= n * sharers:
        return n
    return min(n, max(1, n // 8, -(-left // (2 * sharers))))


def lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DbLedger:
    """The deliveries table as a work queue, claimed under leases."""

    def __init__(self, engine: Engine, edition: Edition, owner: str | None = None,
                 lease_seconds: int = LEASE_SECONDS, sharers: int = 1,
                 run: str | None = None) -> None:
        """``sharers``: how many loops claim from this edition at once (the processes
        of one ``send``), which ``claim`` splits the end of the queue between; ``run``:
        the run this ledger is part of (a delivery process's: its parent's ledger's),
        whose deferred rows put back in the queue ``unrequeue`` defers again."""
        self.engine = engine
        self.edition = edition
        self.owner = owner or lease_owner()
        self.run = run or self.owner
        self.lease = dt.timedelta(seconds=lease_seconds)
        self._renew_seconds = lease_seconds / 4
        self.host = socket.gethostname()
        self.sharers = sharers
        self._after = 0  # claim() resumes after the highest id it has claimed
        # The skipped rows' reason once a claim found the edition abandoned: the
        # delivery loop then gives back what it claimed ahead (``deliver``).
        self.abandoned: str | None = None

    def _abandoned(self, s: Any) -> str | None:
        """The reason an abandoned edition's rows are skipped with; None while it is not
        abandoned. Read first in each transaction that plans, claims or puts rows back
        in the queue. On PostgreSQL it holds the edition's row (FOR SHARE) until that
        transaction ends: ``abandon`` locks the row before it skips the rows, so it
        waits for such a transaction and then skips what it left pending, or the
        transaction waits for ``abandon`` and sees it (read alone, a row given back
        between ``abandon``'s look and its commit stayed pending for ever)."""
        q = (select(Edition.abandoned_at, Edition.abandoned_reason)
             .where(Edition.id == self.edition.id))
        if self.engine.dialect.name == "postgresql":
            q = q.with_for_update(read=True)
        row = s.execute(q).first()
        if row is None or row[0] is None:
            return None
        self.abandoned = abandoned_reason(row[1])
        return self.abandoned

    def plan(self, jobs: Iterator[list[Job]], *, empty_reason: str = "") -> PlanReport:
        """Write one pending row per job, a chunk per transaction (a crash keeps what
        was planned; the rerun plans only subscribers without a row).

        Each row carries the subscriber's day; the unique (subscriber, day) key makes
        the database, not this process, decide who gets that day's edition: a row
        another planner already wrote wins, and this one is counted as ``already``."""
        report = PlanReport()
        reason = empty_reason or "no paper matched the profile and no trending section"
        day = self.edition.day
        to_send, to_skip = str(DeliveryStatus.PENDING), str(DeliveryStatus.SKIPPED)
        for chunk in jobs:
            now = utcnow()
            rows: list[PlanRow] = [
                (j.recipient.id, j.day or day, j.entry_ids, j.details, to_send, "")
                if j.entry_ids else
                (j.recipient.id, j.day or day, j.entry_ids, j.details, to_skip, reason)
                for j in chunk]
            if not rows:
                continue
            with session_scope(self.engine) as s:
                if self._abandoned(s) is not None:  # meanwhile: nothing more is planned
                    return report
                if self.engine.dialect.name == "postgresql":
                    written = list(s.scalars(_PG_PLAN, _pg_plan_params(
                        self.edition.id, now, rows)))
                else:
                    written = list(s.scalars(_SQLITE_PLAN, _sqlite_plan_params(
                        self.edition.id, now, rows)))
            skipped = sum(1 for st in written if st == DeliveryStatus.SKIPPED)
            report.skipped += skipped
            report.planned += len(written) - skipped
            report.already += len(rows) - len(written)
        with session_scope(self.engine) as s:
            s.execute(update(Edition).where(Edition.id == self.edition.id)
                      .values(planned_at=utcnow()))
        return report

    def sent_last_hour(self, limit: int) -> list[float]:
        """How many seconds ago each of the newest ``limit`` messages sent within the
        last hour (any edition) went: what an hourly rate limit counts from earlier
        runs (``RateLimiter``)."""
        now = utcnow()
        # By ``sent_at`` alone, on its index (0015): a message sent went out whatever
        # its row says since (a bounce), and the status's index would read every row
        # ever sent.
        with session_scope(self.engine, readonly=True) as s:
            times = s.scalars(select(Delivery.sent_at)
                              .where(Delivery.sent_at > now - dt.timedelta(hours=1))
                              .order_by(Delivery.sent_at.desc()).limit(limit)).all()
        return [max(0.0, (now - at).total_seconds()) for at in times if at is not None]

    def has_sent(self) -> bool:
        """Whether a message of this edition has been sent (accepted by the mail
        server), by any run: what tells a refusal of one reader's message from a
        refusal of every message (``deliver``'s size and content refusals)."""
        with connection_scope(self.engine, readonly=True) as s:
            return s.execute(select(Delivery.id).where(
                Delivery.edition_id == self.edition.id,
                Delivery.status == DeliveryStatus.SENT).limit(1)).first() is not None

    def reclaim(self) -> int:
        """Put back rows whose lease holder is gone: expired, or a dead process here (of
        an abandoned edition: skipped)."""
        with session_scope(self.engine) as s:
            return self._take_back(s, utcnow(), self._abandoned(s))

    def _take_back(self, s: Any, now: dt.datetime, abandoned: str | None) -> int:
        owners = s.execute(
            select(Delivery.lease_owner, func.min(Delivery.lease_expires))
            .where(Delivery.edition_id == self.edition.id,
                   Delivery.status == DeliveryStatus.SENDING)
            .group_by(Delivery.lease_owner)
        ).all()
        dead = [owner for owner, expires in owners
                if lease_gone(owner, expires, now, self.host)]
        if not dead:
            return 0
        # A dead process of this host gives back every row it held. Another host's
        # holder only its rows whose lease has run out, read again as they are
        # taken: its earliest lease ran out, but a renewal may have committed since
        # (its later rows, or all of them), and those rows are still its own.
        here = [owner for owner in dead if held_here(owner, self.host) is not None]
        back = ({"status": DeliveryStatus.PENDING} if abandoned is None else
                {"status": DeliveryStatus.SKIPPED, "reason": abandoned, "updated_at": now})
        result = s.execute(
            update(Delivery)
            .where(Delivery.edition_id == self.edition.id,
                   Delivery.status == DeliveryStatus.SENDING,
                   Delivery.lease_owner.in_(dead),
                   Delivery.lease_owner.in_(here) | (Delivery.lease_expires < now))
            .values(lease_owner="", lease_expires=None, **back)
        )
        return int(result.rowcount or 0)

    def retry_failed(self, *, deferred: bool = False) -> int:
        """Failures of an earlier run that a rerun sends again go back in the queue
        (``requeued_failure``: transient ones, and messages refused for their size or
        content once others were accepted); with ``deferred`` (the operator's retry)
        also the deferred rows, due or not (the operator's "now"), and the rows that
        expired deferred. None of an abandoned edition."""
        with session_scope(self.engine) as s:
            if self._abandoned(s) is not None:
                return 0
            result = s.execute(
                update(Delivery)
                .where(Delivery.edition_id == self.edition.id,
                       requeued_failure(by_operator=deferred))
                # an expired row gets a window of its own again: its old one is over,
                # and the first refusal for now would fail it again without a try more
                .values(status=DeliveryStatus.PENDING, reason="",
                        first_try_at=case((Delivery.reason == EXPIRED, None),
                                          else_=Delivery.first_try_at))
            )
            n = int(result.rowcount or 0)  # type: ignore[attr-defined]
        return n + (self.requeue_due(None) if deferred else 0)

    def requeue_due(self, now: dt.datetime | None) -> int:
        """Deferred rows whose next try is due at ``now`` (naive UTC; None: all of
        them) go back in the queue; claiming them takes a lease as for any row, so
        however many processes do this at once, each is sent once. None of an
        abandoned edition (``abandon`` skipped them)."""
        where = [Delivery.edition_id == self.edition.id,
                 Delivery.status == DeliveryStatus.DEFERRED]
        if now is not None:
            where.append(Delivery.next_try_at <= now)
        with session_scope(self.engine) as s:
            if self._abandoned(s) is not None:
                return 0
            # touched now, and marked as this run's until claimed: should the run stop
            # first, ``unrequeue`` makes them deferred rows due again, for the next run
            result = s.execute(update(Delivery).where(*where)
                               .values(status=DeliveryStatus.PENDING, updated_at=utcnow(),
                                       lease_owner=self._requeuer))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @property
    def _requeuer(self) -> str:
        """What the deferred rows this ledger's run put back in the queue carry until
        claimed (a pending row otherwise carries no lease owner)."""
        return f"{REQUEUED}{self.run}"

    def abandon(self, by: str, reason: str) -> Abandoned:
        """Stop the edition for good, in one transaction: marked abandoned (when, by
        whom, why), and every row not handed to a mail server (pending, deferred, put
        back in the queue, or held by a run that is gone) skipped with the reason.
        Rows a live run holds stay its own: it records what it sent as sent, and what it
        gives back is skipped (``_give_back``), its next claim finding the edition
        abandoned. An edition already abandoned, or with nothing left that any run would
        send, is left as it is (``already``, ``complete``)."""
        now = utcnow()
        line = abandoned_reason(reason)
        with session_scope(self.engine) as s:
            # the edition's row first, as every claim and give-back reads it (FOR SHARE):
            # those under way commit before the rows are read here, later ones see this
            # (FOR NO KEY UPDATE: it waits for the claims' and records' FOR SHARE, not
            # for the key locks a live run's sent rows take as they are recorded)
            ed = s.execute(select(Edition.abandoned_at, Edition.abandoned_by,
                                  Edition.abandoned_reason)
                           .where(Edition.id == self.edition.id)
                           .with_for_update(key_share=True)).one()
            if ed.abandoned_at is not None:
                return Abandoned(ed.abandoned_at, ed.abandoned_by, ed.abandoned_reason,
                                 already=True)
            counts = dict(s.execute(
                select(Delivery.status, func.count())
                .where(Delivery.edition_id == self.edition.id,
                       Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.DEFERRED,
                                            DeliveryStatus.SENDING]))
                .group_by(Delivery.status)).all())
            retried = s.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.edition_id == self.edition.id, requeued_failure()))
            if not counts and not retried:  # a later send would only plan newcomers
                return Abandoned(None, complete=True)
            s.execute(update(Edition).where(Edition.id == self.edition.id)
                      .values(abandoned_at=now, abandoned_by=by, abandoned_reason=reason))
            skipped = {}
            for state in (DeliveryStatus.PENDING, DeliveryStatus.DEFERRED):
                done = s.execute(update(Delivery).where(
                    Delivery.edition_id == self.edition.id, Delivery.status == state)
                    .values(status=DeliveryStatus.SKIPPED, reason=line, lease_owner="",
                            lease_expires=None, updated_at=now))
                skipped[str(state)] = int(done.rowcount or 0)  # type: ignore[attr-defined]
            skipped[str(DeliveryStatus.SENDING)] = self._take_back(s, now, line)
        self.abandoned = line
        return Abandoned(now, by, reason, skipped=skipped,
                         in_flight=counts.get(DeliveryStatus.SENDING, 0)
                         - skipped[str(DeliveryStatus.SENDING)])

    def unrequeue(self) -> int:
        """The deferred rows this run put back in the edition's queue (or gave back,
        in any of its processes: ``send --processes``) and no loop claimed, deferred
        again (due): what a run that stopped (a signal, a fault of the sending side)
        leaves, so the next run takes them up as deferred rows due. Another live run's
        are its own. How many."""
        with session_scope(self.engine) as s:
            result = s.execute(update(Delivery).where(
                Delivery.edition_id == self.edition.id,
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.lease_owner == self._requeuer).values(
                status=DeliveryStatus.DEFERRED, lease_owner="", updated_at=utcnow()))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def _pending_ids(self, s: Any, n: int, after: int, *, lock: bool = True) -> list[int]:
        q = (select(Delivery.id).where(Delivery.edition_id == self.edition.id,
                                       Delivery.status == DeliveryStatus.PENDING,
                                       Delivery.id > after)
             .order_by(Delivery.id).limit(n))
        if lock and self.engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        return list(s.scalars(q))

    def claim(self, n: int) -> list[Job]:
        """Up to ``n`` pending rows, leased to this ledger's owner; none once the edition
        is abandoned (``abandoned`` then says so). With ``sharers``
        loops claiming, a claim looks ``sharers`` batches ahead, and where fewer rows
        than that are left it takes a share of them (half of an even split, at least an
        eighth of a batch): whole batches to the end left one loop sending its last
        batch alone while the others had finished.

        Only choosing and leasing the rows holds the write lock (SQLite's is the whole
        database): the look ahead is read before it and the leased rows after it. With
        the rows read inside it, a claim made in a thread beside a rendering loop held
        the lock 30-100 ms, waiting for the interpreter's lock between statements, and
        another process's first claim waited that long (and SQLite's growing retry
        sleeps beyond it) before it could send anything."""
        now = utcnow()
        if self.sharers > 1:
            # How much is left, read without locking: on PostgreSQL a locked look
            # ahead (FOR UPDATE SKIP LOCKED) held rows this claim does not take, and
            # another loop claiming at that moment found none and ended early.
            with connection_scope(self.engine, readonly=True) as s:
                left = len(self._pending_ids(s, n * self.sharers, self._after, lock=False))
            n = end_share(n, self.sharers, left)
        with connection_scope(self.engine) as s:
            if self._abandoned(s) is not None:
                return []
            # Resume after the last row claimed: the index entries of rows already
            # claimed stay behind as dead "pending" entries until a vacuum, and
            # scanning from the start would walk them all on every claim (quadratic over
            # an edition of a million). When nothing is left ahead, look from the start
            # once more, so rows put back by a reclaim are never skipped.
            ids = self._pending_ids(s, n, self._after)
            if not ids and self._after:
                self._after = 0
                ids = self._pending_ids(s, n, 0)
            if not ids:
                return []
            resume, self._after = self._after, max(ids)
            s.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.PENDING)
                .values(status=DeliveryStatus.SENDING, lease_owner=self.owner,
                        lease_expires=now + self.lease,
                        attempts=Delivery.attempts + 1, updated_at=now)
            )
        try:
            return self._leased(ids)
        except BaseException:
            # Leased and committed, never handed to the loop: back in the queue at once
            # (as the single transaction's rollback left them), not after the lease runs
            # out, and the next claim looks where this one did. If even that fails, the
            # lease expires and a reclaim takes them back.
            self._after = resume
            with contextlib.suppress(Exception), connection_scope(self.engine) as s:
                self._give_back(s, ids, utcnow(), self._abandoned(s))
            raise

    def renew(self) -> int:
        """Extend the lease of every row this ledger holds (claimed, not yet recorded) to
        a full lease from now; how many. The delivery loop calls it every
        ``renew_seconds`` (a quarter of the lease): a batch's last message may wait in
        the queue behind slow servers, or ``[smtp] data_timeout`` (600 s) for the answer
        to its end, far past the lease it was claimed with, and a worker on another
        host would then take the row back and send it again."""
        now = utcnow()
        with connection_scope(self.engine) as s:
            done = s.execute(
                update(Delivery)
                .where(Delivery.edition_id == self.edition.id,
                       Delivery.status == DeliveryStatus.SENDING,
                       Delivery.lease_owner == self.owner)
                .values(lease_expires=now + self.lease))
            return int(done.rowcount or 0)

    @property
    def renew_seconds(self) -> float:
        return self._renew_seconds

    def _give_back(self, s: Any, ids: Sequence[int | None], now: dt.datetime,
                   abandoned: str | None) -> None:
        """Rows this ledger leased and never handed over, back in the queue as they
        were before the claim (pending, the attempt not counted); a deferred row put
        back in the queue (``requeue_due``: it has a next try) marked again as a run's
        requeued row, which ``unrequeue`` defers again should the run stop. (Pending
        and unmarked, it was due to no one: the next run sent nothing, though the
        stopped run said that `send` sends what it leaves.) Of an edition ``abandoned``
        (the reason): skipped with it, as ``abandon`` skipped the rows left pending."""
        back: dict[str, Any] = (
            {"status": DeliveryStatus.PENDING,
             "lease_owner": case((Delivery.next_try_at.is_not(None), self._requeuer),
                                 else_="")}
            if abandoned is None else
            {"status": DeliveryStatus.SKIPPED, "reason": abandoned, "lease_owner": ""})
        s.execute(update(Delivery)
                  .where(Delivery.id.in_(ids), Delivery.lease_owner == self.owner,
                         Delivery.status == DeliveryStatus.SENDING)
                  .values(lease_expires=None, attempts=Delivery.attempts - 1,
                          updated_at=now, **back))

    def _leased(self, ids: list[int]) -> list[Job]:
        """The jobs of the rows this claim just leased; those of subscribers no longer
        active are skipped with the reason. The rows are ours (the lease says so), so
        they are read without the lock. Columns, not ORM objects: building and tracking
        two mapped instances a row was most of a claim's CPU, taken from the sending
        loop (the GIL)."""
        with connection_scope(self.engine, readonly=True) as s:
            rows = s.execute(
                select(Delivery.id, Delivery.attempts, Delivery.entry_ids, Delivery.details,
                       Delivery.first_try_at, Delivery.day, Subscriber.id.label("sid"),
                       Subscriber.email, Subscriber.name,
                       # a deferred row's picks are explained with the profile they
                       # were made for, should the reader have changed it since
                       func.coalesce(Delivery.keywords, Subscriber.keywords),
                       Subscriber.link_nonce,
                       Subscriber.status.label("sub_status"))
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.id.in_(ids), Delivery.lease_owner == self.owner,
                       Delivery.status == DeliveryStatus.SENDING)
                .order_by(Delivery.id)
            ).all()
        jobs = []
        inactive: dict[str, list[int]] = {}
        for (did, attempts, entry_ids, details, first_try, day, sid, email, name, keywords,
             nonce, sub_status) in rows:
            if sub_status != SubscriberStatus.ACTIVE:
                inactive.setdefault(sub_status, []).append(did)
                continue
            jobs.append(Job.stored(Recipient(sid, email, name, keywords, nonce),
                                   list(entry_ids), details, did, attempts, day, first_try))
        if inactive:
            with connection_scope(self.engine) as s:
                for sub_status, dids in inactive.items():
                    s.execute(update(Delivery)
                              .where(Delivery.id.in_(dids), Delivery.lease_owner == self.owner)
                              .values(status=DeliveryStatus.SKIPPED, lease_owner="",
                                      reason=f"subscriber {sub_status} before delivery"))
        return jobs

    def _record_sent_pg(self, s: Any, sent: Sequence[Outcome], now: dt.datetime) -> None:
        """PostgreSQL: the sent rows and their papers as two statements over arrays.
        An executemany of the same work spent a quarter of a worker's CPU in per-row
        driver and SQLAlchemy bookkeeping (profiled at a million subscribers).

        The papers first: the rows' update locks them until the transaction ends, and
        an insert held up by a lock on ``sent_entries`` (a migration, say) behind it
        held up this loop's lease renewals on those rows too, until their leases ran
        out and another host sent them again."""
        pairs = [(o.job.recipient.id, e) for o in sent for e in o.job.entry_ids]
        if pairs:
            s.execute(text(
                "INSERT INTO sent_entries (subscriber_id, entry_id, edition_id, sent_at) "
                "SELECT v.sid, v.eid, :edition, :now FROM unnest(CAST(:sids AS integer[]), "
                "CAST(:eids AS text[])) AS v(sid, eid) "
                "ON CONFLICT (subscriber_id, entry_id) DO NOTHING"),
                {"edition": self.edition.id, "now": now,
                 "sids": [p[0] for p in pairs], "eids": [p[1] for p in pairs]})
        s.execute(text(
            "UPDATE deliveries AS d SET status = :status, message_id = v.mid, sent_at = :now, "
            "last_error = '', lease_owner = '', lease_expires = NULL, updated_at = :now, "
            "next_try_at = NULL, shown = v.shown "
            "FROM unnest(CAST(:ids AS integer[]), CAST(:mids AS text[]), "
            "CAST(:shown AS text[])) AS v(id, mid, shown) "
            "WHERE d.id = v.id AND d.lease_owner = :owner"),
            {"status": str(DeliveryStatus.SENT), "now": now, "owner": self.owner,
             "ids": [o.job.delivery_id for o in sent], "mids": [o.message_id for o in sent],
             "shown": [_shown(o) for o in sent]})

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Outcomes in one transaction: sent rows together with the papers they carried."""
        if not outcomes:
            return
        now = utcnow()
        sent = [o for o in outcomes if o.status == OutcomeStatus.SENT]
        released = [o for o in outcomes if o.status == OutcomeStatus.RELEASED]
        deferred = [o for o in outcomes if o.status == OutcomeStatus.DEFERRED]
        failed = [o for o in outcomes if o.status not in (
            OutcomeStatus.SENT, OutcomeStatus.RELEASED, OutcomeStatus.DEFERRED)]
        # Executemany, a row each, guarded by our lease (a row another process took back
        # is not ours); every outcome gives the lease up.
        ours = (update(DELIVERIES)
                .where(Delivery.id == bindparam("b_id"), Delivery.lease_owner == self.owner)
                .values(lease_owner="", lease_expires=None, updated_at=now))
        mark_failed = ours.values(status=bindparam("b_status"), last_error=bindparam("b_error"),
                                  reason=bindparam("b_reason"))
        pg = self.engine.dialect.name == "postgresql"
        sent_rows = pairs = ""
        if sent and not pg:
            # Made before the lock is taken. The papers as (subscriber, paper) pairs in
            # one JSON parameter, split by SQLite: an executemany built, bound and
            # converted a dict a paper (ten a message) in Python, under the lock.
            sent_rows = json.dumps([[o.job.delivery_id, o.message_id, _shown(o)]
                                    for o in sent])
            papers = [[o.job.recipient.id, e] for o in sent for e in o.job.entry_ids]
            pairs = json.dumps(papers) if papers else ""
        # A bounce changes the subscriber through the lifecycle, which writes its event
        # as an ORM object: only then does the record need a session.
        bounced = any(o.bounce for o in failed)
        scope = session_scope if bounced else connection_scope
        with scope(self.engine) as s:
            # (read first: the edition's row is locked before any delivery row, as
            # ``abandon`` locks them)
            abandoned = self._abandoned(s) if released or deferred else None
            if sent and pg:
                self._record_sent_pg(s, sent, now)
            elif sent:
                s.execute(_SQLITE_SENT, {"rows": sent_rows, "status": str(DeliveryStatus.SENT),
                                         "now": now, "owner": self.owner})
                if pairs:
                    s.execute(_SQLITE_SENT_ENTRIES,
                              {"pairs": pairs, "edition": self.edition.id, "now": now})
            if released:  # claimed but never handed over: back in the queue, as it was
                self._give_back(s, [o.job.delivery_id for o in released], now, abandoned)
            if deferred and abandoned is not None:  # refused for now, and never tried again
                s.execute(ours.values(status=DeliveryStatus.SKIPPED, reason=abandoned,
                                      last_error=bindparam("b_error")),
                          [{"b_id": o.job.delivery_id, "b_error": o.error[:2000]}
                           for o in deferred])
            elif deferred:  # refused for now: tried again when due (``delivery.deferral``)
                s.execute(ours.values(status=DeliveryStatus.DEFERRED,
                                      last_error=bindparam("b_error"), reason="",
                                      first_try_at=bindparam("b_first"),
                                      next_try_at=bindparam("b_next"),
                                      keywords=bindparam("b_keywords")),
                          [{"b_id": o.job.delivery_id, "b_error": o.error[:2000],
                            "b_first": o.first_try, "b_next": o.next_try,
                            "b_keywords": o.job.recipient.keywords} for o in deferred])
            if failed:
                s.execute(mark_failed, [{
                    "b_id": o.job.delivery_id, "b_status": o.status, "b_error": o.error[:2000],
                    "b_reason": o.reason or ("permanent" if o.permanent else TRANSIENT)}
                    for o in failed])
            if bounced:  # the subscriber's change is the lifecycle's, as every one is
                session = cast(Session, s)  # the scope chosen above for this
                for o in failed:
                    if o.bounce:
                        lifecycle.bounce_id(session, o.job.recipient.id, by="bounce",
                                            error=o.error[:500], edition=self.edition.id)


