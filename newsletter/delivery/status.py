"""Counts by delivery state, the last errors and the deferred rows (with their next
try) of an edition, and the deferred rows of every edition."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import Engine, func, select

from newsletter.store.db import session_scope
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    utcnow,
)

# ---- status ----------------------------------------------------------------------------


def edition_status(engine: Engine, edition: Edition) -> dict[str, Any]:
    """An edition's counts, last errors and deferred rows; and the readers' emails of
    its day across every edition that carried them (``day_counts``, ``day_editions``,
    ``day_errors``): with hourly slots a day is many editions, and the latest one
    alone hid an earlier slot's failures."""
    with session_scope(engine) as s:
        counts = dict(s.execute(
            select(Delivery.status, func.count()).where(Delivery.edition_id == edition.id)
            .group_by(Delivery.status)).all())
        # why the failed rows failed: whether an operator's requeue sends them again
        # (``ledger.REQUEUED_REASONS``) is the reason's, not the state's
        failed_reasons = dict(s.execute(
            select(Delivery.reason, func.count())
            .where(Delivery.edition_id == edition.id,
                   Delivery.status == DeliveryStatus.FAILED)
            .group_by(Delivery.reason).order_by(Delivery.reason)).all())
        errors = s.execute(_errors().where(Delivery.edition_id == edition.id)).all()
        # A reader's day is within a day of the UTC day of the edition that carried it
        # (the editions' index finds their rows; no index leads with a row's day).
        near = select(Edition.id).where(Edition.day.between(
            edition.day - dt.timedelta(days=1), edition.day + dt.timedelta(days=1)))
        on_day = Delivery.edition_id.in_(near) & (Delivery.day == edition.day)
        day_counts: Counter[str] = Counter()
        day_editions: set[int] = set()
        for edition_id, status, n in s.execute(
                select(Delivery.edition_id, Delivery.status, func.count()).where(on_day)
                .group_by(Delivery.edition_id, Delivery.status)):
            day_counts[status] += n
            day_editions.add(edition_id)
        day_errors = s.execute(_errors().where(on_day, Delivery.edition_id != edition.id)
                               ).all()
        deferred = s.execute(
            select(Subscriber.email, Delivery.next_try_at, Delivery.first_try_at,
                   Delivery.attempts, Delivery.last_error)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == edition.id,
                   Delivery.status == DeliveryStatus.DEFERRED)
            .order_by(Delivery.next_try_at).limit(10)).all()
        holders = s.execute(
            select(Delivery.lease_owner, func.count(), func.max(Delivery.lease_expires))
            .where(Delivery.edition_id == edition.id,
                   Delivery.status == DeliveryStatus.SENDING)
            .group_by(Delivery.lease_owner).order_by(Delivery.lease_owner)).all()
    return {"edition": edition.id, "day": edition.day.isoformat(), "slot": edition.slot,
            "planned": edition.planned_at is not None,
            "counts": {str(k): counts.get(k, 0) for k in DeliveryStatus},
            "failed_reasons": {str(k): int(v) for k, v in failed_reasons.items()},
            "last_errors": _listed(errors),
            "day_counts": {str(k): day_counts.get(k, 0) for k in DeliveryStatus},
            "day_editions": len(day_editions),
            "day_errors": _listed(day_errors),
            "deferred": [{"email": e, "next_try": _iso(nxt), "first_try": _iso(first),
                          "tries": tries, "error": err}
                         for e, nxt, first, tries, err in deferred],
            "sending": _holders(holders),
            # who stopped it for good, when and why (``newsletter abandon``)
            "abandoned": ({"at": _iso(edition.abandoned_at), "by": edition.abandoned_by,
                           "reason": edition.abandoned_reason}
                          if edition.abandoned_at is not None else None)}


def _holders(rows: Any) -> list[dict[str, Any]]:
    """Who holds the edition's ``sending`` rows, and whether that holder is gone (the
    ledger's own test, ``lease_gone``): a process killed with -9 leaves its rows
    ``sending`` until a run takes them back, which the counts alone did not say."""
    from newsletter.delivery.ledger import lease_gone

    now = utcnow()
    return [{"holder": owner.rpartition(":")[0] if owner.count(":") >= 2 else owner,
             "rows": n, "lease_expires": _iso(expires),
             "gone": lease_gone(owner, expires, now)}
            for owner, n, expires in rows]


def _errors() -> Any:
    """The newest failed and skipped rows (with the reader's address), ten at most."""
    return (select(Subscriber.email, Delivery.status, Delivery.last_error, Delivery.reason,
                   Edition.slot)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .join(Edition, Edition.id == Delivery.edition_id)
            .where(Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.SKIPPED]))
            .order_by(Delivery.updated_at.desc()).limit(10))


def _listed(rows: Any) -> list[dict[str, Any]]:
    # a skipped row says why it was skipped, not an earlier try's error (a row
    # deferred, then skipped as its reader unsubscribed, keeps both); a failed row's
    # reason says whether a requeue sends it again (``refused_content``, ``transient``)
    return [{"email": e, "status": st, "slot": slot, "reason": r,
             "error": (r or err) if st == DeliveryStatus.SKIPPED else (err or r)}
            for e, st, err, r, slot in rows]


def _iso(at: dt.datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with its zone."""
    return at.replace(tzinfo=dt.UTC).isoformat(timespec="seconds") if at else None


def deferred_summary(engine: Engine) -> dict[str, Any]:
    """Deferred rows across every edition: how many, how many are due now, and the
    next try (what `newsletter run` or the next `send` sends again)."""
    now = utcnow()
    with session_scope(engine, readonly=True) as s:
        rows, due, first = s.execute(
            select(func.count(),
                   func.count().filter(Delivery.next_try_at <= now),
                   func.min(Delivery.next_try_at))
            .where(Delivery.status == DeliveryStatus.DEFERRED)).one()
    return {"rows": int(rows or 0), "due": int(due or 0), "next_try": _iso(first)}


def subscriber_counts(engine: Engine) -> dict[str, int]:
    """Subscribers by status: how many the bounce reports and complaints have stopped."""
    with session_scope(engine, readonly=True) as s:
        counts = dict(s.execute(select(Subscriber.status, func.count())
                                .group_by(Subscriber.status)).all())
    return {str(k): counts.get(k, 0) for k in SubscriberStatus}
