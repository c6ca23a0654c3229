"""Every change of a subscriber's state or profile, in one place, each recording its
Event with who asked for it.

Confirm, unsubscribe, bounce, complaint, pause, resume, resubscribe, sign-up again,
preferences, an operator's edit and erase all come through here, whoever asks (the
web pages, the webhooks, the delivery ledger, the CLI, the console), so the rules live
once: which states a change may leave from, what the audit trail says, and that an
erased address stays suppressed. Every Event's detail names who did it (``by``):
``cli``, ``web``, ``admin:<name>``, ``bounce`` (the delivery ledger, from the mail
server's answer), ``webhook:<provider>``.

Values arrive checked (the application layer, ``newsletter.service.subscribers``,
checks them and words its errors for whoever asked); the words here are neutral.
Each function takes an open session and leaves committing to the caller, so a change
and the rest of a transaction stand or fall together.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, delete, or_, select, update
from sqlalchemy.orm import Session

from newsletter.errors import FieldError, InputError
from newsletter.store.models import (
    Delivery,
    Event,
    MailReport,
    Subscriber,
    SubscriberStatus,
    Suppression,
    utcnow,
)
from newsletter.store.suppressions import address_hash

S = SubscriberStatus
# Stopped by the address's owner or its mail server: no edition goes there again unless
# the owner asks (resubscribe or a new confirmed sign-up).
STOPPED = (S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED)
# What an operator may choose (the CLI's `subscribers edit --status` and the console's
# form alike). Pending and complained are facts, never chosen: the person's own
# confirmation, their own spam report. A subscriber already in any status may keep it.
OPERATOR_STATUSES = (S.ACTIVE, S.PAUSED, S.UNSUBSCRIBED, S.BOUNCED)
RECEIVING = (S.ACTIVE, S.PAUSED)


def _event(session: Session, sub: Subscriber, kind: str, by: str,
           detail: dict[str, Any] | None = None) -> None:
    session.add(Event(subscriber_id=sub.id, kind=kind, detail={**(detail or {}), "by": by}))


def _set(session: Session, sub: Subscriber, status: S, kind: str, by: str,
         detail: dict[str, Any] | None = None) -> bool:
    if sub.status == status:
        return False
    sub.status = status
    sub.updated_at = utcnow()
    if status == S.ACTIVE:  # a day whose send time passed before this is not owed late
        sub.active_since = sub.updated_at
    _event(session, sub, kind, by, detail)
    return True


def confirmable(sub: Subscriber, change: int | None = None) -> bool:
    """Whether a confirmation link (naming the pending ``change``, or none) changes
    anything now (``confirm``); asked alone, without changing anything, by the page a
    link opens, so a link that can do nothing says so rather than offer a button."""
    if change is not None:
        return ((sub.pending_change or {}).get("id") == change
                and sub.status in (*RECEIVING, S.PENDING, S.UNSUBSCRIBED))
    return sub.status == S.PENDING


def confirm(session: Session, sub: Subscriber, *, by: str = "web",
            change: int | None = None) -> bool:
    """Double opt-in completed: pending → active, with the consent recorded.

    ``change`` is the pending change (``sign_up_again``) the confirmation link names:
    its profile is applied now, and an unsubscribed subscriber who signed up again
    comes back. False when nothing changed (not pending; or the link's change is not
    the one pending, replaced by a newer sign-up)."""
    if not confirmable(sub, change):
        return False
    if change is not None:
        pending = sub.pending_change or {}
        sub.keywords, sub.tz = str(pending["keywords"]), str(pending["tz"])
        sub.send_hour, sub.pending_change = int(pending["hour"]), None
        sub.updated_at = utcnow()
        if sub.status in RECEIVING:  # confirmed the new settings only
            _event(session, sub, "preferences", by, {"from": "sign-up"})
            return True
    sub.consent_at, sub.consent_source = utcnow(), by
    return _set(session, sub, S.ACTIVE, "confirmed", by)


def unsubscribe(session: Session, sub: Subscriber, *, by: str, **detail: Any) -> bool:
    if sub.status in STOPPED:
        return False
    return _set(session, sub, S.UNSUBSCRIBED, "unsubscribed", by, detail)


# A hard bounce arriving after these is recorded, and the status stays: a complaint is
# the stronger "stop" (and kept as such), and an unsubscribed person must still be able
# to come back (``resubscribe`` revives only "unsubscribed").
BOUNCE_KEEPS = (S.BOUNCED, S.UNSUBSCRIBED, S.COMPLAINED)


def bounce(session: Session, sub: Subscriber, *, by: str, **detail: Any) -> bool:
    """A hard bounce: the address does not exist; stop sending there."""
    sub.bounce_count = (sub.bounce_count or 0) + 1
    if sub.status in BOUNCE_KEEPS:
        sub.updated_at = utcnow()
        _event(session, sub, "bounced", by, detail)
        return False
    return _set(session, sub, S.BOUNCED, "bounced", by, detail)


def bounce_id(session: Session, subscriber_id: int, *, by: str = "bounce",
              **detail: Any) -> None:
    """The delivery ledger's hook: mark a subscriber bounced by id, in the ledger's
    own transaction (no ORM load needed)."""
    session.execute(update(Subscriber).where(Subscriber.id == subscriber_id)
                    .values(status=case((Subscriber.status.in_(BOUNCE_KEEPS),
                                         Subscriber.status), else_=S.BOUNCED),
                            bounce_count=Subscriber.bounce_count + 1,
                            updated_at=utcnow()))
    session.add(Event(subscriber_id=subscriber_id, kind="bounced",
                      detail={**detail, "by": by}))


def complain(session: Session, sub: Subscriber, *, by: str, **detail: Any) -> bool:
    """A spam complaint: the strongest "stop"."""
    return _set(session, sub, S.COMPLAINED, "complained", by, detail)


def pause(session: Session, sub: Subscriber, *, by: str) -> bool:
    if sub.status != S.ACTIVE:
        return False
    return _set(session, sub, S.PAUSED, "paused", by)


def resume(session: Session, sub: Subscriber, *, by: str) -> bool:
    if sub.status != S.PAUSED:
        return False
    return _set(session, sub, S.ACTIVE, "resumed", by)


def resubscribe(session: Session, sub: Subscriber, *, by: str = "web") -> bool:
    """The owner asks to come back after unsubscribing (from their own signed link).
    A bounced or complained address is not revived from here: the mail server said no."""
    if sub.status != S.UNSUBSCRIBED:
        return False
    sub.consent_at, sub.consent_source = utcnow(), by
    return _set(session, sub, S.ACTIVE, "resubscribed", by)


def apply_notice(session: Session, address: str, kind: str, *, by: str, **detail: Any
                 ) -> bool:
    """A provider's bounce or complaint about ``address`` (already normalized)."""
    sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if sub is None:
        return False
    if kind == "bounce":
        bounce(session, sub, by=by, **detail)
    elif kind == "complaint":
        complain(session, sub, by=by, **detail)
    else:
        raise ValueError(kind)
    return True


# ---- erasure ------------------------------------------------------------------------

def about_their_mail(sub_id: int) -> ColumnElement[bool]:
    """The bounce mailbox's reports about a subscriber's mail: those naming them, and
    those about one of their deliveries (what an erasure and an operator's removal,
    ``subscribers.remove``, delete and their "download my data" lists)."""
    theirs = select(Delivery.id).where(Delivery.subscriber_id == sub_id)
    return or_(MailReport.subscriber_id == sub_id, MailReport.delivery_id.in_(theirs))


def erase(session: Session, sub: Subscriber, *, by: str, reason: str = "erased") -> None:
    """Delete everything about a subscriber (row, ledger rows, sent papers, events,
    the bounce mailbox's reports about their mail) and keep only a hashed suppression
    entry, so a later import or sign-up cannot bring the address back. A report would
    outlive the row (its subscriber and delivery are only unset) with the address and
    their mail server's words in it."""
    digest = address_hash(sub.email)
    if session.get(Suppression, digest) is None:
        session.add(Suppression(hash=digest, reason=reason, at=utcnow()))
    session.execute(delete(MailReport).where(about_their_mail(sub.id)))
    session.execute(delete(Event).where(Event.subscriber_id == sub.id))
    session.execute(delete(Delivery).where(Delivery.subscriber_id == sub.id))
    session.delete(sub)
    session.flush()
    session.add(Event(subscriber_id=None, kind="erased", detail={"by": by}))


# ---- the owner's own changes ---------------------------------------------------------

def sign_up_again(session: Session, sub: Subscriber, *, keywords: str, tz: str, hour: int,
                  by: str = "web") -> int | None:
    """A new sign-up for an address already known (pending, or unsubscribed). Anyone
    can type an address into the form, so the stored row does not change: the profile
    asked for waits beside it (``pending_change``, a newer sign-up replacing it) and is
    applied only by the confirmation link that names it (``confirm``). The change's id
    for that link, or None for everyone else (already active or paused, stopped by
    their mail server)."""
    if sub.status not in (S.PENDING, S.UNSUBSCRIBED):
        return None
    change = secrets.randbits(40)
    sub.pending_change = {"id": change, "keywords": keywords, "tz": tz, "hour": hour,
                          "at": utcnow().isoformat()}
    _event(session, sub, "signed_up_again", by)
    return change


def update_preferences(session: Session, sub: Subscriber, *, keywords: str, tz: str,
                       hour: int, paused: bool, by: str = "web",
                       frequency: str | None = None) -> bool:
    """The owner's own settings; pausing and resuming are state changes like others.
    Only active or paused subscribers change here (False otherwise)."""
    if sub.status not in RECEIVING:
        return False
    sub.keywords, sub.tz, sub.send_hour = keywords, tz, hour
    if frequency is not None:
        sub.frequency = frequency
    sub.updated_at = utcnow()
    if paused:
        pause(session, sub, by=by)
    else:
        resume(session, sub, by=by)
    _event(session, sub, "preferences", by)
    return True


# ---- an operator's edit --------------------------------------------------------------

@dataclass(frozen=True)
class Changes:
    """An operator's checked values; None leaves a field as it is."""

    name: str | None = None
    keywords: str | None = None
    tz: str | None = None
    send_hour: int | None = None
    status: str | None = None
    frequency: str | None = None


def edit(session: Session, sub: Subscriber, changes: Changes, *, by: str) -> list[str]:
    """An operator's change (CLI or console): the fields that changed. The profile
    fields are recorded as one ``edited`` event; a status change is the same state
    change (and event) as when the person or their mail server makes it."""
    profile = {k: v for k, v in (("name", changes.name), ("keywords", changes.keywords),
                                 ("tz", changes.tz), ("send_hour", changes.send_hour),
                                 ("frequency", changes.frequency))
               if v is not None and getattr(sub, k) != v}
    if changes.status is not None and changes.status != sub.status:
        _check_status(sub, changes.status)  # before anything changes
    for key, value in profile.items():
        setattr(sub, key, value)
    if profile:
        sub.updated_at = utcnow()
        _event(session, sub, "edited", by, {"fields": sorted(profile)})
    changed = sorted(profile)
    if changes.status is not None and changes.status != sub.status:
        _choose_status(session, sub, changes.status, by)
        changed.append("status")
    return changed


def _check_status(sub: Subscriber, status: str) -> None:
    """Whether an operator may move ``sub`` to ``status``: active and paused only
    between themselves (an unsubscribed, bounced, complained or unconfirmed address
    is only started again by its owner), unsubscribed from any status not already
    stopped, bounced from any."""
    if status not in OPERATOR_STATUSES:
        raise FieldError("status", f"expected one of {', '.join(OPERATOR_STATUSES)}, "
                         f"got {status!r}")
    if status in RECEIVING and sub.status not in RECEIVING:
        owners: dict[str, str] = {
            S.UNSUBSCRIBED: "only they can start their emails again: from the preferences "
            "link of an email they had, or by signing up on the site again",
            S.PENDING: "only they can start their emails: by the link in their "
            "confirmation email"}
        how = owners.get(sub.status, "their mail server refused or reported the mail, "
                         "and it is not sent to them again")
        raise InputError(f"{sub.email} is {sub.status}; {how}")
    if status == S.UNSUBSCRIBED and sub.status in STOPPED:
        raise InputError(f"{sub.email} is {sub.status}: already stopped")


def _choose_status(session: Session, sub: Subscriber, status: str, by: str) -> None:
    if status == S.PAUSED:
        pause(session, sub, by=by)
    elif status == S.ACTIVE:
        resume(session, sub, by=by)
    elif status == S.UNSUBSCRIBED:
        unsubscribe(session, sub, by=by)
    else:
        bounce(session, sub, by=by)
