"""Counts by delivery state, the last errors and the deferred rows (with their next
try) of an edition, and the deferred rows of every edition."""

from __future__ import annotations

import datetime as dt
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
    with session_scope(engine) as s:
        counts = dict(s.execute(
            select(Delivery.status, func.count()).where(Delivery.edition_id == edition.id)
            .group_by(Delivery.status)).all())
        errors = s.execute(
            select(Subscriber.email, Delivery.status, Delivery.last_error, Delivery.reason)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == edition.id,
                   Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.SKIPPED]))
            .order_by(Delivery.updated_at.desc()).limit(10)).all()
        deferred = s.execute(
            select(Subscriber.email, Delivery.next_try_at, Delivery.first_try_at,
                   Delivery.attempts, Delivery.last_error)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.edition_id == edition.id,
                   Delivery.status == DeliveryStatus.DEFERRED)
            .order_by(Delivery.next_try_at).limit(10)).all()
    return {"edition": edition.id, "day": edition.day.isoformat(), "slot": edition.slot,
            "planned": edition.planned_at is not None,
            "counts": {str(k): counts.get(k, 0) for k in DeliveryStatus},
            # a skipped row says why it was skipped, not an earlier try's error (a row
            # deferred, then skipped as its reader unsubscribed, keeps both)
            "last_errors": [{"email": e, "status": st,
                             "error": (r or err) if st == DeliveryStatus.SKIPPED else (err or r)}
                            for e, st, err, r in errors],
            "deferred": [{"email": e, "next_try": _iso(nxt), "first_try": _iso(first),
                          "tries": tries, "error": err}
                         for e, nxt, first, tries, err in deferred]}


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
