"""The console's preview: exactly what ``newsletter preview`` renders (it calls
``run_preview``, the send pipeline with a memory ledger and a file transport, in a
throw-away folder), plus why each paper was picked, from the same ranker call the
renderer makes. Nothing is written to the database.

"Send a test" hands that one message, re-addressed, to the configured transport.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.parser
import email.policy
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.delivery.runs import run_preview
from newsletter.errors import InputError
from newsletter.render.mime import Message
from newsletter.store.models import DeliveryStatus
from newsletter.store.subscribers import check_keywords, normalize_email
from newsletter.transports import make_transport

# Who a keywords-only preview is addressed to: a reserved domain (RFC 2606).
KEYWORDS_ADDRESS = "preview@example.invalid"


@dataclass
class Why:
    title: str
    paper_id: str
    section: str  # matches | trending
    matched: list[tuple[str, float]]
    relevance: float
    popularity: float
    recency: float

    @property
    def score(self) -> float:
        return round(self.relevance + self.popularity + self.recency, 4)


@dataclass
class PreviewResult:
    to: str
    keywords: str
    day: dt.date
    candidates: int
    status: str  # sent (rendered) | skipped | failed
    error: str = ""
    subject: str = ""
    html: str = ""
    text: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    why: list[Why] = field(default_factory=list)
    message: Message | None = None


def _headers(data: bytes) -> list[tuple[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(head)
    return [(k, str(v)) for k, v in parsed.items()]


def preview(settings: Settings, engine: Engine, day: dt.date, *, subscriber: str = "",
            keywords: str = "") -> PreviewResult:
    """One email as ``send`` would make it, for a subscriber or for typed keywords."""
    recipients = None
    address = ""
    if subscriber.strip():
        address = normalize_email(subscriber)
    elif keywords.strip():
        recipients = [(0, KEYWORDS_ADDRESS, "", check_keywords(keywords))]
    else:
        raise InputError("pick a subscriber or type keywords")
    with tempfile.TemporaryDirectory(prefix="nl-admin-preview-") as tmp:
        report = run_preview(settings, engine, day, Path(tmp), email=address or None,
                             recipients=recipients)
    if not report.outcomes:  # what `send` would say instead
        return PreviewResult(address or KEYWORDS_ADDRESS, "", day, report.candidates,
                             str(DeliveryStatus.SKIPPED), report.note)
    outcome = report.outcomes[0]
    job = outcome.job
    result = PreviewResult(job.recipient.email, job.recipient.keywords, day, report.candidates,
                           str(outcome.status), outcome.error)
    rendered = outcome.rendered
    if rendered is None:
        return result
    result.status = str(DeliveryStatus.SENT) if outcome.status == DeliveryStatus.SENT \
        else result.status
    result.subject, result.html, result.text = rendered.subject, rendered.html, rendered.text
    result.message = rendered.message
    result.headers = _headers(rendered.message.data)
    ctx = report.context
    if ctx is not None:
        picks = [ctx.index[e] for e in job.entry_ids if e in ctx.index]
        explanations = ctx.selection.ranker.explain_many(job.recipient.keywords, picks)
        for i, ex in zip(picks, explanations, strict=True):
            e = ctx.rows[i]
            result.why.append(Why(e.title, e.id, "trending" if job.trending else "matches",
                                  list(ex.matched), ex.relevance, ex.popularity, ex.recency))
    return result


_TO = re.compile(rb"^To:.*(?:\r\n[ \t].*)*$", re.IGNORECASE | re.MULTILINE)


def readdress(message: Message, to: str) -> Message:
    """The same message for another recipient: envelope and ``To:`` header."""
    head, sep, body = message.data.partition(b"\r\n\r\n")
    head = _TO.sub(lambda _m: b"To: " + to.encode(), head, count=1)
    return dataclasses.replace(message, to=to, data=head + sep + body)


async def send_test(settings: Settings, message: Message, to: str) -> str:
    """Hand one message to the configured transport; returns the provider's id."""
    address = normalize_email(to)
    transport = make_transport(settings)
    await transport.open()
    try:
        return await transport.send(readdress(message, address))
    finally:
        await transport.close()


def as_query(result: PreviewResult, subscriber: str) -> dict[str, Any]:
    return {"subscriber": subscriber, "keywords": "" if subscriber else result.keywords,
            "day": result.day.isoformat()}
