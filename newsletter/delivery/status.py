"""Counts by delivery state and the last errors of an edition."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from newsletter.store.db import session_scope
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
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
    return {"edition": edition.id, "day": edition.day.isoformat(), "slot": edition.slot,
            "planned": edition.planned_at is not None,
            "counts": {str(k): counts.get(k, 0) for k in DeliveryStatus},
            "last_errors": [{"email": e, "status": st, "error": err or r}
                            for e, st, err, r in errors]}


def subscriber_counts(engine: Engine) -> dict[str, int]:
    """Subscribers by status: how many the bounce reports and complaints have stopped."""
    with session_scope(engine, readonly=True) as s:
        counts = dict(s.execute(select(Subscriber.status, func.count())
                                .group_by(Subscriber.status)).all())
    return {str(k): counts.get(k, 0) for k in SubscriberStatus}
