"""The subscriber use cases: sign up, confirm, change preferences, unsubscribe,
resubscribe, ask for a data or erasure link by email, erase, an operator's add /
edit / remove / import, and the bounce and complaint notices of the mail providers.

Each is one function the CLI, the web pages, the console and the webhooks call after
parsing their input; they present the result (or the ``InputError``) in their own
words. Values are checked here, before anything changes (by the one set of checks,
``store.subscribers``', the profile by ``newsletter.profile``); the state changes
themselves are ``store.lifecycle``'s, which records who asked: ``cli``, ``web``,
``admin:<name>``, ``webhook:<provider>``.

Every function takes an open session and leaves committing to the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter.config import WebConfig
from newsletter.errors import FieldError, InputError
from newsletter.store import lifecycle
from newsletter.store import subscribers as store
from newsletter.store.db import hold_address, hold_sign_up_count
from newsletter.store.models import (
    Delivery,
    Edition,
    Event,
    LearnedMute,
    MailReport,
    Subscriber,
    SubscriberStatus,
    Vote,
    utcnow,
)
from newsletter.store.suppressions import is_suppressed, lift_suppression

log = logging.getLogger("newsletter.service.subscribers")
S = SubscriberStatus
T = TypeVar("T")
OPERATOR_STATUSES = tuple(str(s) for s in lifecycle.OPERATOR_STATUSES)
# What the owner chooses on their preferences page.
OWNER_STATUSES = (str(S.ACTIVE), str(S.PAUSED))

check_keywords = store.check_keywords
check_tz = store.check_tz
check_hour = store.check_hour
check_name = store.clean_name
check_frequency = store.check_frequency
normalize_email = store.normalize_email


class NotFound(InputError):
    """The subscriber asked for does not exist (any more)."""


class Unreachable(InputError):
    """The subscriber's address is one we no longer send to (it bounced, or its owner
    marked our mail as spam): nothing more is emailed there, a link included."""


def find(session: Session, email: str) -> Subscriber:
    """A subscriber by address, whatever the address policy (an address that could not
    be added now is still found)."""
    address = normalize_email(email, utf8_local_part=True)
    sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if sub is None:
        raise NotFound(f"{address} is not a subscriber")
    return sub


def get(session: Session, sub_id: int) -> Subscriber:
    sub = session.get(Subscriber, sub_id)
    if sub is None:
        raise NotFound("this subscription no longer exists")
    return sub


# ---- the operator's ------------------------------------------------------------------

def add(session: Session, email: str, *, keywords: str, name: str = "", tz: str = "UTC",
        hour: int | str | None = None, utf8_local_part: bool = False,
        by: str = "cli", frequency: str = "daily") -> Subscriber:
    """One subscriber, active at once: the operator vouches for consent."""
    return store.add(session, email, keywords=keywords, name=name, tz=tz, hour=hour,
                     source=by, utf8_local_part=utf8_local_part, frequency=frequency)


def check_csv(data: bytes, origin: str) -> list[str]:
    """Every bad row of an import, one message each naming the line; empty when the
    file would import."""
    return store.check_csv(data, origin)


def import_csv(session: Session, data: bytes, origin: str, *,
               utf8_local_part: bool = False) -> store.ImportReport:
    """Every row checked, all stored in one transaction or none."""
    return store.import_csv(session, data, origin, utf8_local_part=utf8_local_part)


@dataclass(frozen=True)
class Edit:
    """An operator's edit as given (None: leave as it is); checked by ``edit``."""

    name: str | None = None
    keywords: str | None = None
    tz: str | None = None
    hour: int | str | None = None
    status: str | None = None
    frequency: str | None = None

    def empty(self) -> bool:
        return all(v is None for v in (self.name, self.keywords, self.tz, self.hour,
                                       self.status, self.frequency))


def _field(field: str, check: Callable[[Any], T], value: Any) -> T | None:
    """``check(value)``, its error naming ``field``; None stays None (unchanged)."""
    if value is None:
        return None
    try:
        return check(value)
    except InputError as exc:
        raise FieldError(field, exc.message) from None


def checked(given: Edit) -> lifecycle.Changes:
    """The values of an edit, each checked as on ``add``; the first bad one raises a
    ``FieldError`` naming its field (``name``, ``keywords``, ``tz``, ``hour``)."""
    return lifecycle.Changes(
        name=_field("name", check_name, given.name),
        keywords=_field("keywords", check_keywords, given.keywords),
        tz=_field("tz", check_tz, given.tz),
        send_hour=_field("hour", check_hour, given.hour),
        status=given.status,
        frequency=_field("frequency", check_frequency, given.frequency))


def edit(session: Session, sub: Subscriber, given: Edit, *, by: str) -> list[str]:
    """An operator's change of one subscriber (``by``: ``cli`` or ``admin:<name>``):
    every value checked as on ``add``, the status one of ``OPERATOR_STATUSES`` (or
    the one they have). Returns the fields that changed."""
    return lifecycle.edit(session, sub, checked(given), by=by)


def remove(session: Session, email: str, *, by: str = "cli") -> str:
    """Delete a subscriber and their history (their address may come back later,
    unlike an erased one); the address removed."""
    return store.remove(session, find(session, email).email, by=by)


# ---- the owner's ---------------------------------------------------------------------

@dataclass(frozen=True)
class SignUp:
    """A sign-up form, checked (``sign_up_form``)."""

    address: str
    keywords: str
    tz: str
    hour: int


def sign_up_form(address: str, keywords: str, tz: str, hour: str | int) -> SignUp:
    """The sign-up's values checked (the address is already the web's normalized one)."""
    return SignUp(address, check_keywords(keywords), check_tz(tz), check_hour(hour))


@dataclass(frozen=True)
class Reserved:
    """A sign-up to confirm by email: who (id and link nonce, for the link) and the
    pending change it made (None: the row holds what they asked for)."""

    id: int
    nonce: int
    change: int | None = None


# A pending sign-up of an erased address (the person's own, maybe): the erasure stands
# until it is confirmed, and the row goes once its confirmation links have expired.
AFTER_ERASURE = "web:after-erasure"


def sign_up(session: Session, form: SignUp, limits: WebConfig) -> Reserved | None:
    """A web sign-up: a new subscriber is pending with these settings; a pending or
    unsubscribed one keeps their row as it is and gets the settings as a pending
    change (``lifecycle.sign_up_again``); an erased address is pending again, still
    suppressed until its owner confirms. A confirmation slot is taken. What to send
    the confirmation email for, or None (already receiving, stopped by their mail
    server, or the per-address limit reached: ``confirm_interval_minutes``,
    ``confirms_per_day``, counted from the events so every process agrees; nothing is
    stored then, so a stranger's sign-ups cannot replace a change already emailed).

    The address is held first (``hold_address``), new or known: sign-ups of it at the
    same moment take their turns, each counting the confirmations of those before."""
    hold_address(session, form.address)
    now = utcnow()
    _forget_stale_returns(session, now - dt.timedelta(hours=limits.confirm_hours))
    sub = session.scalar(select(Subscriber).where(Subscriber.email == form.address))
    if sub is not None and sub.status not in (S.PENDING, S.UNSUBSCRIBED):
        return None
    if sub is not None and _limited(session, sub.id, now, limits):
        return None
    change = None
    if sub is None:
        erased = is_suppressed(session, form.address)
        sub = store.add(session, form.address, keywords=form.keywords, tz=form.tz,
                        hour=form.hour, status=S.PENDING,
                        source=AFTER_ERASURE if erased else "web", erased_may_return=erased)
    else:
        change = lifecycle.sign_up_again(session, sub, keywords=form.keywords, tz=form.tz,
                                         hour=form.hour, by="web")
    session.add(Event(subscriber_id=sub.id, kind=CONFIRMATION_SENT, at=now))
    return Reserved(sub.id, sub.link_nonce, change)


# A sign-up post that the sign-up limits let through, whoever's address it names (no
# subscriber: it is counted before the address is looked at), with the client it came
# from (detail "client": ``web.security.client_key``); kept an hour.
SIGN_UP_POSTED = "sign_up_posted"


def take_sign_up_slot(session: Session, client: str, limits: WebConfig) -> str | None:
    """A sign-up post from ``client`` (``web.security.client_key``: an IPv6 one by its
    /64): counted, and None, while that client has made fewer than
    ``signups_per_client_per_hour`` in the last hour and all clients together fewer
    than ``signups_per_hour``; past either, the name of the limit that refuses it, and
    nothing is counted. Both are counted in the events so every web process shares
    them: held in each process's memory, uvicorn's workers or several hosts on one
    database each let the limit through. The posts are counted, not the confirmations
    sent: whether the next post is refused must not tell whether an earlier post's
    address was sent one. The count is held (``hold_sign_up_count``) so that posts at
    once cannot all take the last slot; the posts older than the hour are deleted."""
    hold_sign_up_count(session)
    now = utcnow()
    posted = Event.kind == SIGN_UP_POSTED
    session.execute(delete(Event).where(posted, Event.at <= now - dt.timedelta(hours=1)))
    count = select(func.count(Event.id)).where(posted)
    theirs = count.where(Event.detail["client"].as_string() == client)
    if (session.scalar(theirs) or 0) >= limits.signups_per_client_per_hour:
        return "signups_per_client_per_hour"
    if (session.scalar(count) or 0) >= limits.signups_per_hour:
        return "signups_per_hour"
    session.add(Event(kind=SIGN_UP_POSTED, at=now, detail={"client": client}))
    return None


# The events that count the emails a visitor can make us send to an address: a
# sign-up's confirmation, and a data or erasure link asked for on the preferences page.
CONFIRMATION_SENT = "confirmation_sent"
MAILBOX_LINK_SENT = "mailbox_link_sent"


def _limited(session: Session, sub_id: int, now: dt.datetime, limits: WebConfig,
             kind: str = CONFIRMATION_SENT) -> bool:
    """Has ``sub_id`` had an email of ``kind`` within ``confirm_interval_minutes``, or
    ``confirms_per_day`` of them in the last day? Counted from the events, so every
    process and a restart agree."""
    sent = select(func.count(Event.id)).where(Event.subscriber_id == sub_id,
                                              Event.kind == kind)
    recent = session.scalar(sent.where(Event.at > now - dt.timedelta(
        minutes=limits.confirm_interval_minutes))) or 0
    today = session.scalar(sent.where(Event.at > now - dt.timedelta(days=1))) or 0
    if recent or today >= limits.confirms_per_day:
        log.info("%s for subscriber %s not sent again: limit reached", kind, sub_id)
        return True
    return False


@dataclass(frozen=True)
class Mailbox:
    """Where an emailed data or erasure link goes, and whose it is (id and link nonce)."""

    id: int
    nonce: int
    email: str


def request_mailbox_link(session: Session, sub_id: int, purpose: str,
                         limits: WebConfig) -> Mailbox | None:
    """Their preferences page asked for a link to download their data or erase them
    (``purpose``), to be emailed to their address: whoever holds a preferences link may
    only be someone the digest was forwarded to. A slot is taken under the same limits
    as a sign-up's confirmations, counted apart (``MAILBOX_LINK_SENT``), so a forwarded
    link cannot flood the subscriber. Where to send it, or None when the limit is
    reached; ``NotFound`` when they no longer exist, ``Unreachable`` when their address
    bounced or complained.

    Their row is locked first (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already
    serializes writers): on PostgreSQL two requests at once both counted no event
    before either committed, and both sent a link."""
    sub = session.get(Subscriber, sub_id, with_for_update=True)
    if sub is None:
        raise NotFound("this subscription no longer exists")
    if sub.status in (S.BOUNCED, S.COMPLAINED):
        # as a sign-up's confirmation is never sent there: mail to an address that
        # bounced or complained hurts every reader's delivery
        raise Unreachable(f"we no longer send email to this address ({sub.status})")
    now = utcnow()
    if _limited(session, sub.id, now, limits, MAILBOX_LINK_SENT):
        return None
    session.add(Event(subscriber_id=sub.id, kind=MAILBOX_LINK_SENT,
                      detail={"purpose": purpose}, at=now))
    return Mailbox(sub.id, sub.link_nonce, sub.email)


def _forget_stale_returns(session: Session, before: dt.datetime) -> None:
    """Pending sign-ups of erased addresses whose confirmation links have all expired:
    deleted, so an erased address does not stay stored because someone typed it."""
    stale = select(Subscriber.id).where(Subscriber.status == S.PENDING,
                                        Subscriber.consent_source == AFTER_ERASURE,
                                        Subscriber.created_at < before)
    for sub_id in list(session.scalars(stale)):
        session.execute(delete(Event).where(Event.subscriber_id == sub_id))
        session.execute(delete(Subscriber).where(Subscriber.id == sub_id))


def release_confirmation(session: Session, sub_id: int,
                         kind: str = CONFIRMATION_SENT) -> None:
    """The confirmation email (or, ``kind`` ``MAILBOX_LINK_SENT``, the data or erasure
    link) could not be sent: its slot is given back (the newest event of ``kind``), so
    a failed send does not use up the address's limit."""
    newest = session.scalar(select(func.max(Event.id)).where(
        Event.subscriber_id == sub_id, Event.kind == kind))
    if newest is not None:
        session.execute(delete(Event).where(Event.id == newest))


@dataclass(frozen=True)
class Confirmed:
    """What a confirmation link did: ``outcome`` is "subscribed" (active now, or
    already), "updated" (a receiving subscriber's new settings applied), "replaced" (a
    newer sign-up's link is the one that counts), or "stopped" (their status, e.g.
    complained or unsubscribed, is not one a confirmation link changes)."""

    email: str
    outcome: str
    status: str


def confirm_outcome(session: Session, sub_id: int, change: int | None = None,
                    ) -> Confirmed | None:
    """What following a confirmation link cannot do, read without changing anything:
    "replaced" (a newer sign-up's link is the one that counts) or "stopped" (a status a
    confirmation does not change); else "subscribed", what ``confirm`` then says of an
    address that is or becomes active. None when they no longer exist. The link's page
    asks this first, and says at once what a button would only say once pressed."""
    sub = session.get(Subscriber, sub_id)
    if sub is None:
        return None
    if change is not None and (sub.pending_change or {}).get("id") != change:
        return Confirmed(sub.email, "replaced", str(sub.status))
    if not lifecycle.confirmable(sub, change) and sub.status not in lifecycle.RECEIVING:
        return Confirmed(sub.email, "stopped", str(sub.status))
    return Confirmed(sub.email, "subscribed", str(sub.status))


def confirm(session: Session, sub_id: int, change: int | None = None) -> Confirmed | None:
    """Their confirmation link followed: pending → active (with the pending change the
    link names, when it names one). An erased address confirmed by its owner is no
    longer suppressed: their own consent, given again. None when they no longer exist."""
    ahead = confirm_outcome(session, sub_id, change)
    if ahead is None or ahead.outcome != "subscribed":
        return ahead
    sub = session.get(Subscriber, sub_id)
    assert sub is not None
    was = sub.status
    changed = lifecycle.confirm(session, sub, by="web", change=change)
    if sub.status not in lifecycle.RECEIVING:
        return Confirmed(sub.email, "stopped", str(sub.status))
    if changed and is_suppressed(session, sub.email):
        lift_suppression(session, sub.email)
        session.add(Event(subscriber_id=sub.id, kind="erasure_lifted", detail={"by": "web"}))
    outcome = "updated" if was in lifecycle.RECEIVING and change is not None else "subscribed"
    return Confirmed(sub.email, outcome, str(sub.status))


def unsubscribe(session: Session, sub_id: int, *, one_click: bool = False) -> str | None:
    """Their unsubscribe link (or their mail client's one click). Their address, or
    None when they no longer exist."""
    sub = session.get(Subscriber, sub_id)
    if sub is None:
        return None
    lifecycle.unsubscribe(session, sub, by="web", one_click=one_click)
    return sub.email


def resubscribe(session: Session, sub_id: int) -> bool:
    """Back after unsubscribing, from their own preferences page."""
    sub = session.get(Subscriber, sub_id)
    return sub is not None and lifecycle.resubscribe(session, sub, by="web")


@dataclass(frozen=True)
class Preferences:
    """The preferences form, checked (``preferences_form``)."""

    keywords: str
    tz: str
    hour: int
    paused: bool
    frequency: str | None = None  # None: as it is (a form without the field)


def preferences_form(keywords: str, tz: str, hour: str | int, status: str,
                     frequency: str | None = None) -> Preferences:
    if status not in OWNER_STATUSES:
        raise InputError("delivery must be daily or paused")
    return Preferences(check_keywords(keywords), check_tz(tz), check_hour(hour),
                       status == S.PAUSED,
                       None if frequency is None else check_frequency(frequency))


def change_preferences(session: Session, sub_id: int, form: Preferences) -> bool:
    """Their own keywords, time zone, hour, pause or resume; False when they cannot
    change them (no longer receiving) or no longer exist."""
    sub = session.get(Subscriber, sub_id)
    return sub is not None and lifecycle.update_preferences(
        session, sub, keywords=form.keywords, tz=form.tz, hour=form.hour,
        paused=form.paused, by="web", frequency=form.frequency)


def erase(session: Session, sub_id: int, *, by: str = "web") -> bool:
    """Everything about them deleted, the address kept only as a hash that refuses it;
    False when there was nothing to erase. (Their emailed link, or the operator's
    ``subscribers erase`` for a request that reached them another way.)"""
    sub = session.get(Subscriber, sub_id)
    if sub is None:
        return False
    lifecycle.erase(session, sub, by=by)
    return True


def shown_detail(detail: Any) -> Any:
    """An event's detail as its subscriber sees it: "an operator" did it, never which
    one (an operator's login name is theirs, and a name half of the way in)."""
    if isinstance(detail, dict) and str(detail.get("by", "")).startswith("admin:"):
        return detail | {"by": "an operator"}
    return detail


def stored_data(session: Session, sub_id: int) -> dict[str, Any] | None:
    """Everything stored about a subscriber, as their "download my data" gives it
    (the emailed link, ``newsletter/web/owner.py``) and ``subscribers data`` prints it;
    None when there is no such subscriber."""
    sub = session.get(Subscriber, sub_id)
    if sub is None:
        return None
    events = session.scalars(select(Event).where(Event.subscriber_id == sub_id)
                             .order_by(Event.id))
    rows = session.execute(select(Delivery, Edition.day).join(Edition)
                           .where(Delivery.subscriber_id == sub_id).order_by(Delivery.id))
    votes = session.scalars(select(Vote).where(Vote.subscriber_id == sub_id)
                            .order_by(Vote.id))
    mutes = session.scalars(select(LearnedMute).where(LearnedMute.subscriber_id == sub_id)
                            .order_by(LearnedMute.term))
    reports = session.scalars(select(MailReport).where(lifecycle.about_their_mail(sub_id))
                              .order_by(MailReport.id))
    return {
        "subscriber": store.as_dict(sub) | {"created_at": sub.created_at.isoformat(),
                                            "pending_change": sub.pending_change},
        "votes": [{"paper": v.entry_id, "direction": v.direction, "source": v.source,
                   "at": v.created_at.isoformat()} for v in votes],
        "learned_terms_removed": [{"term": m.term, "label": m.label,
                                   "at": m.created_at.isoformat()} for m in mutes],
        "events": [{"kind": e.kind, "at": e.at.isoformat(), "detail": shown_detail(e.detail)}
                   for e in events],
        # with the keywords its papers were picked for and what went wrong (a bounce's
        # or the mail server's words): stored about them like the rest
        "deliveries": [{"edition": day.isoformat(), "status": d.status,
                        "papers": list(d.entry_ids), "keywords": d.keywords,
                        "reason": d.reason, "error": d.last_error,
                        "sent_at": d.sent_at.isoformat() if d.sent_at else None}
                       for d, day in rows],
        # what their mail server answered our emails (a full mailbox, a refusal)
        "mail_reports": [{"kind": r.kind, "outcome": r.outcome, "at": r.at.isoformat(),
                          "detail": r.detail} for r in reports],
    }


# ---- their mail servers' -------------------------------------------------------------

def apply_notices(session: Session, notices: list[tuple[str, str]], *, provider: str) -> int:
    """A provider's verified bounce and complaint notices, as (address, "bounce" |
    "complaint"): the subscribers changed (an address that is not one is skipped)."""
    changed = 0
    for address, kind in notices:
        try:
            normalized = normalize_email(address)
        except InputError:
            continue
        changed += lifecycle.apply_notice(session, normalized, kind,
                                          by=f"webhook:{provider}", provider=provider)
    return changed
