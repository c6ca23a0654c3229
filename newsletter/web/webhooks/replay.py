"""Replays refused by the database: every notice acted on leaves its event id in
``webhook_events`` in the same transaction as the changes it made, so the same
notice posted again (to this process, another one, or after a restart) is refused,
and two copies arriving at once change subscribers once (the primary key decides).
Rows older than their provider's window are pruned as new ones come: past it, the
provider's freshness check refuses the notice anyway."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import delete
from sqlalchemy.orm import Session

from newsletter.store.models import WebhookEvent, utcnow


class Replayed(Exception):
    """A notice whose event id was already acted on."""


def claim(session: Session, provider: str, claims: list[tuple[str, float]]) -> None:
    """Record ``claims`` ((event id, seconds to keep)); ``Replayed`` when one is known
    (flushed now, so the caller's transaction fails before it changes anyone)."""
    if not claims:
        return
    now = utcnow()
    keep = max(seconds for _, seconds in claims)
    session.execute(delete(WebhookEvent).where(
        WebhookEvent.provider == provider,
        WebhookEvent.seen_at < now - dt.timedelta(seconds=keep)))
    for event_id, _ in claims:
        digest = hashlib.sha256(f"{provider}:{event_id}".encode()).hexdigest()
        if session.get(WebhookEvent, (provider, digest)) is not None:
            raise Replayed(event_id)
        session.add(WebhookEvent(provider=provider, event_id=digest, seen_at=now))
    session.flush()
