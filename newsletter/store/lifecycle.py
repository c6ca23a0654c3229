"""Every change of a subscriber's state, in one place, each recording its Event.

Confirm, unsubscribe, bounce, complaint, pause, resume, resubscribe and erase
all come through here, whoever asks (the web pages, the webhooks, the delivery
ledger, the CLI), so the rules live once: which states a change may leave from,
what the audit trail says, and that an erased address stays suppressed.

Each function takes an open session and leaves committing to the caller, so a
change and the rest of a transaction stand or fall together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from newsletter.store.models import (
    Delivery,
    Event,
    Subscriber,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from newsletter.store.suppressions import address_hash, is_suppressed

S = SubscriberStatus
# Stopped by the address's owner or its mail server: no edition goes there again unless
# the owner asks (resubscribe or a new confirmed sign-up).
STOPPED = (S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED)


def _event(session: Session, sub: Subscriber, kind: str, detail: dict[str, Any] | None) -> None:
    session.add(Event(subscriber_id=sub.id, kind=kind, detail=detail or {}))


def _set(session: Session, sub: Subscriber, status: S, kind: str,
         detail: dict[str, Any] | None = None) -> bool:
    if sub.status == status:
        return False
    sub.status = status
    sub.updated_at = utcnow()
    _event(session, sub, kind, detail)
    return True


def confirm(session: Session, sub: Subscriber, source: str = "web") -> bool:
    """Double opt-in completed: pending → active, with the consent recorded."""
    if sub.status != S.PENDING:
        return False
    sub.consent_at, sub.consent_source = utcnow(), source
    return _set(session, sub, S.ACTIVE, "confirmed")


def unsubscribe(session: Session, sub: Subscriber, **detail: Any) -> bool:
    if sub.status in (S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED):
        return False
    return _set(session, sub, S.UNSUBSCRIBED, "unsubscribed", detail)


def bounce(session: Session, sub: Subscriber, **detail: Any) -> bool:
    """A hard bounce: the address does not exist; stop sending there."""
    sub.bounce_count = (sub.bounce_count or 0) + 1
    if sub.status == S.BOUNCED:
        _event(session, sub, "bounced", detail)
        return False
    return _set(session, sub, S.BOUNCED, "bounced", detail)


def bounce_id(session: Session, subscriber_id: int, **detail: Any) -> None:
    """The delivery ledger's hook: mark a subscriber bounced by id, in the ledger's
    own transaction (no ORM load needed)."""
    session.execute(update(Subscriber).where(Subscriber.id == subscriber_id)
                    .values(status=S.BOUNCED, bounce_count=Subscriber.bounce_count + 1,
                            updated_at=utcnow()))
    session.add(Event(subscriber_id=subscriber_id, kind="bounced", detail=detail))


def complain(session: Session, sub: Subscriber, **detail: Any) -> bool:
    """A spam complaint: the strongest "stop"."""
    return _set(session, sub, S.COMPLAINED, "complained", detail)


def pause(session: Session, sub: Subscriber) -> bool:
    if sub.status != S.ACTIVE:
        return False
    return _set(session, sub, S.PAUSED, "paused")


def resume(session: Session, sub: Subscriber) -> bool:
    if sub.status != S.PAUSED:
        return False
    return _set(session, sub, S.ACTIVE, "resumed")


def resubscribe(session: Session, sub: Subscriber, source: str = "web") -> bool:
    """The owner asks to come back after unsubscribing (from their own signed link).
    A bounced or complained address is not revived from here: the mail server said no."""
    if sub.status != S.UNSUBSCRIBED:
        return False
    sub.consent_at, sub.consent_source = utcnow(), source
    return _set(session, sub, S.ACTIVE, "resubscribed")


def apply_notice(session: Session, address: str, kind: str, **detail: Any) -> bool:
    """A provider's bounce or complaint about ``address`` (already normalized)."""
    sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if sub is None:
        return False
    if kind == "bounce":
        bounce(session, sub, **detail)
    elif kind == "complaint":
        complain(session, sub, **detail)
    else:
        raise ValueError(kind)
    return True


# ---- erasure ------------------------------------------------------------------------

def erase(session: Session, sub: Subscriber, reason: str = "erased") -> None:
    """Delete everything about a subscriber (row, ledger rows, sent papers, events)
    and keep only a hashed suppression entry, so a later import or sign-up cannot
    bring the address back."""
    digest = address_hash(sub.email)
    if session.get(Suppression, digest) is None:
        session.add(Suppression(hash=digest, reason=reason, at=utcnow()))
    session.execute(delete(Event).where(Event.subscriber_id == sub.id))
    session.execute(delete(Delivery).where(Delivery.subscriber_id == sub.id))
    session.delete(sub)
    session.flush()
    session.add(Event(subscriber_id=None, kind="erased", detail={}))


def sign_up(session: Session, address: str, *, keywords: str, tz: str, hour: int,
            ) -> Subscriber | None:
    """A web sign-up for ``address`` (normalized): the subscriber who should now get a
    confirmation email (new, still pending, or back after unsubscribing), or None
    (already active or paused, stopped by their mail server, or erased)."""
    from newsletter.store.subscribers import add

    if is_suppressed(session, address):
        return None
    sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if sub is None:
        return add(session, address, keywords=keywords, tz=tz, hour=hour,
                   status=S.PENDING, source="web")
    if sub.status not in (S.PENDING, S.UNSUBSCRIBED):
        return None
    _set(session, sub, S.PENDING, "signed_up_again")
    sub.keywords, sub.tz, sub.send_hour = keywords, tz, hour
    return sub


def update_preferences(session: Session, sub: Subscriber, *, keywords: str, tz: str,
                       hour: int, paused: bool) -> bool:
    """The owner's own settings; pausing and resuming are state changes like others.
    Only active or paused subscribers change here (False otherwise)."""
    if sub.status not in (S.ACTIVE, S.PAUSED):
        return False
    sub.keywords, sub.tz, sub.send_hour = keywords, tz, hour
    if paused:
        pause(session, sub)
    else:
        resume(session, sub)
    _event(session, sub, "preferences", None)
    return True
