"""Read the bounce mailbox and act on what mail servers and readers answered.

One use case, called by ``newsletter bounces fetch`` and by the scheduler every
``[bounces] fetch_minutes``: each new message is parsed (``bounces.parse``),
matched to the delivery it answers, and acted on through the subscriber
lifecycle (a hard bounce bounces the subscriber, soft bounces count toward
``soft_limit`` within ``soft_days``, a complaint stops everything, a mailto
request unsubscribes), all in one transaction per batch with a record of the
message's digest, so a message is acted on once even when the mailbox could not
be told it was done (a crash, a dropped connection) and is read again.

Only reports that name a delivery are acted on: the VERP return path (signed),
else the original Message-ID inside the report (unguessable). A report that
names only an address is counted as unmatched, never acted on: anybody can send
a bounce-shaped mail to the bounce mailbox.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter.bounces.mailboxes import Mailbox, open_mailbox
from newsletter.bounces.parse import Kind, Report, read
from newsletter.bounces.verp import Verp
from newsletter.config import BouncesConfig, WebConfig
from newsletter.errors import InputError
from newsletter.observe import bounces_read
from newsletter.render.links import Signer
from newsletter.store import lifecycle, tokens
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import (
    Delivery,
    Event,
    MailReport,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.store.subscribers import normalize_email

log = logging.getLogger("newsletter.bounces")
SHOWN = ("hard", "soft", "complaints", "unsubscribes", "auto_replies", "notices",
         "unmatched", "unknown", "already", "refused")


@dataclass
class FetchReport:
    """What one read of the mailbox found; ``counts`` keys are ``SHOWN``."""

    counts: Counter[str] = field(default_factory=Counter)
    bounced: list[str] = field(default_factory=list)  # addresses newly bounced

    def as_dict(self) -> dict[str, Any]:
        return {**{k: self.counts.get(k, 0) for k in SHOWN}, "bounced": self.bounced}


@dataclass
class Matcher:
    """Finds the delivery a report answers (see the module docstring); ``load``
    fetches one batch's candidates in two queries instead of one per message."""

    verp: Verp | None
    signer: Signer
    by_id: dict[int, Delivery] = field(default_factory=dict)
    by_message_id: dict[str, Delivery] = field(default_factory=dict)

    def load(self, session: Session, reports: list[Report]) -> None:
        ids = {n[0] for r in reports if self.verp is not None
               for n in [self.verp.find(r.to)] if n is not None}
        mids = {m for r in reports for m in r.message_ids}
        self.by_id = {d.id: d for d in _chunked(session, Delivery.id, sorted(ids))}
        self.by_message_id = {d.message_id: d for d in
                              _chunked(session, Delivery.message_id, sorted(mids))}

    def delivery(self, report: Report) -> Delivery | None:
        named = self.verp.find(report.to) if self.verp is not None else None
        if named is not None:
            row = self.by_id.get(named[0])
            if row is not None and row.subscriber_id == named[1]:
                return row
        return next((self.by_message_id[m] for m in report.message_ids
                     if m in self.by_message_id), None)


def _chunked(session: Session, column: Any, values: list[Any]) -> list[Delivery]:
    rows: list[Delivery] = []
    for start in range(0, len(values), 500):
        rows += session.scalars(select(Delivery).where(column.in_(values[start:start + 500])))
    return rows


def read_mailbox(engine: Engine, config: BouncesConfig, web: WebConfig) -> FetchReport:
    """``newsletter bounces fetch`` and the scheduler's job: ``fetch`` with the stored
    signing keys, each outcome counted in ``newsletter_bounces_total{kind}``."""
    with session_scope(engine, readonly=True) as s:
        keys = secret_keys(web, s)
    report = fetch(engine, config, keys)
    bounces_read(report.counts)
    return report


def fetch(engine: Engine, config: BouncesConfig, keys: list[str], *,
          mailbox: Mailbox | None = None,
          metric: Callable[[str], None] | None = None) -> FetchReport:
    """Read every new message once. ``keys`` are the signing keys (newest first)."""
    if mailbox is None:
        if not config.mailbox:
            raise InputError("[bounces] mailbox is not set: nothing to read (see "
                             "docs/operations.md, \"Bounces\")")
        mailbox = open_mailbox(config.mailbox, after=config.after, move_to=config.move_to,
                               cafile=config.ca_file)
    matcher = Matcher(Verp(config.return_path, tuple(keys)) if config.return_path else None,
                      Signer(keys))
    report = FetchReport()
    try:
        for batch in mailbox.batches():
            done = _batch(engine, config, matcher, batch, report)
            mailbox.done(done)
    finally:
        mailbox.close()
    if metric is not None:
        for kind, n in report.counts.items():
            for _ in range(n):
                metric(kind)
    return report


def _batch(engine: Engine, config: BouncesConfig, matcher: Matcher,
           batch: list[tuple[str, bytes]], report: FetchReport) -> list[str]:
    """Act on one batch in one transaction; the keys the mailbox may now file away."""
    digests = {key: hashlib.sha256(raw).hexdigest() for key, raw in batch}
    done: list[str] = []
    with session_scope(engine) as s:
        seen = dict(s.execute(select(MailReport.digest, MailReport.kind).where(
            MailReport.digest.in_(list(digests.values())))).all())
        fresh: list[tuple[str, Report]] = []
        for key, raw in batch:
            digest = digests[key]
            if digest in seen:  # acted on before; the mailbox was not told in time
                if seen[digest] != Kind.UNKNOWN:
                    done.append(key)
                report.counts["already"] += 1
            else:
                parsed = read(raw)
                fresh.append((key, parsed))
                seen[digest] = parsed.kind
        matcher.load(s, [r for _, r in fresh])
        for key, parsed in fresh:
            outcome, delivery = _act(s, config, matcher, parsed, report)
            s.add(MailReport(digest=digests[key], kind=parsed.kind, outcome=outcome,
                             delivery_id=delivery.id if delivery else None,
                             subscriber_id=delivery.subscriber_id if delivery else None,
                             detail=_detail(parsed)))
            report.counts[outcome] += 1
            if parsed.kind != Kind.UNKNOWN:  # unknown mail stays for a person to read
                done.append(key)
    return done


def _act(s: Session, config: BouncesConfig, matcher: Matcher, parsed: Report,
         report: FetchReport) -> tuple[str, Delivery | None]:
    """Apply one report; the count it goes under and the delivery it answered."""
    if parsed.kind == Kind.UNKNOWN:
        return "unknown", None
    if parsed.kind == Kind.AUTO_REPLY:
        return "auto_replies", None
    if parsed.kind == Kind.NOTICE:
        return "notices", None
    if parsed.kind == Kind.UNSUBSCRIBE:
        return _unsubscribe(s, matcher, parsed), None
    delivery = matcher.delivery(parsed)
    sub = s.get(Subscriber, delivery.subscriber_id) if delivery is not None else None
    if delivery is None or sub is None:
        return "unmatched", None
    detail: dict[str, Any] = {"by": "bounce", "status": parsed.status,
                              "reason": parsed.diagnostic, "delivery": delivery.id}
    if parsed.kind == Kind.COMPLAINT:
        lifecycle.complain(s, sub, **detail)
        return "complaints", delivery
    delivery.reason = f"{parsed.kind} bounce {parsed.status}: {parsed.diagnostic}"[:500]
    if parsed.kind == Kind.HARD:
        if lifecycle.bounce(s, sub, **detail):
            report.bounced.append(sub.email)
        return "hard", delivery
    if parsed.kind == Kind.REFUSED:  # the delivery says why; the address is fine
        return "refused", delivery
    _soft(s, config, sub, detail, report)
    return "soft", delivery


def _soft(s: Session, config: BouncesConfig, sub: Subscriber, detail: dict[str, Any],
          report: FetchReport) -> None:
    """A soft bounce is recorded; soft bounces of ``soft_limit`` messages within
    ``soft_days`` make the address bounced (a mailbox full for weeks is as good as
    gone). Messages, not reports: a server may report one message more than once,
    and three reports of one email made an address bounced after two editions."""
    s.add(Event(subscriber_id=sub.id, kind="soft_bounce", detail=detail))
    s.flush()
    since = utcnow() - dt.timedelta(days=config.soft_days)
    details = s.scalars(select(Event.detail).where(
        Event.subscriber_id == sub.id, Event.kind == "soft_bounce", Event.at >= since)).all()
    # each delivery once; a report naming none (the generic webhook's) counts alone
    recent = len({(d or {}).get("delivery") or f"report {i}" for i, d in enumerate(details)})
    if recent >= config.soft_limit and sub.status == SubscriberStatus.ACTIVE \
            and lifecycle.bounce(s, sub, **{**detail, "soft_bounces": recent}):
        report.bounced.append(sub.email)


def _unsubscribe(s: Session, matcher: Matcher, parsed: Report) -> str:
    """A mailto request carries the signed unsubscribe token of one subscriber."""
    try:
        claims = matcher.signer.claims("unsubscribe", parsed.token)
    except InputError:
        return "unmatched"
    # Only for the person the link was made for (``store.tokens``), never a later
    # holder of the id; the legacy bound is read here (a mailbox run is rare).
    found = tokens.holder(s, claims.ids, claims.nonce, tokens.legacy_max_id(s))
    sub = s.get(Subscriber, found.id) if found is not None else None
    if sub is None:
        return "unmatched"
    lifecycle.unsubscribe(s, sub, by="mailto")
    return "unsubscribes"


def apply_reports(s: Session, config: BouncesConfig, notices: list[tuple[str, str]], *,
                  by: str = "webhook:generic") -> int:
    """The generic webhook's reports, ``(email or <message-id>, "type:reason")``, acted on
    as the mailbox's are (soft ones through the same ``soft_limit`` rule); the caller
    proved itself with the URL's secret token, so an address alone is enough here.
    Returns how many subscribers changed status."""
    report = FetchReport()
    changed = 0
    for target, kind_reason in notices:
        kind, _, reason = kind_reason.partition(":")
        sub, delivery_id = _named(s, target)
        if sub is None:
            report.counts["unmatched"] += 1
            continue
        detail: dict[str, Any] = {"by": by, "type": kind, "reason": reason}
        if delivery_id is not None:  # a Message-ID names one message: soft counts it once
            detail["delivery"] = delivery_id
        if kind == "complaint":
            changed += lifecycle.complain(s, sub, **detail)
            report.counts["complaints"] += 1
        elif kind == "hard":
            changed += lifecycle.bounce(s, sub, **detail)
            report.counts["hard"] += 1
        else:
            before = len(report.bounced)
            _soft(s, config, sub, detail, report)
            changed += len(report.bounced) - before
            report.counts["soft"] += 1
    bounces_read(report.counts)
    return changed


def _named(s: Session, target: str) -> tuple[Subscriber | None, int | None]:
    """The subscriber an address names, or the one a sent Message-ID was for with that
    delivery's id (None for an address)."""
    if target.startswith("<"):
        row = s.execute(select(Delivery.id, Delivery.subscriber_id)
                        .where(Delivery.message_id == target)).first()
        return (s.get(Subscriber, row.subscriber_id), row.id) if row else (None, None)
    try:
        email = normalize_email(target, utf8_local_part=True)
    except InputError:
        return None, None
    return s.scalar(select(Subscriber).where(Subscriber.email == email)), None


def _detail(parsed: Report) -> dict[str, Any]:
    return {"status": parsed.status, "reason": parsed.diagnostic[:300],
            "recipients": list(parsed.recipients)[:5], "subject": parsed.subject[:200]}
