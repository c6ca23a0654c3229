"""The reader's side of an email across days, sent through the aiosmtpd sink on
127.0.0.1: "Featured today", the email as sent kept as a record, frequencies."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select, update

from newsletter.delivery.runs import run_send
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Entry, Subscriber

from .conftest import SmtpSink

ADA = "ada@example.org"


def via_sink(settings: Any, sink: SmtpSink) -> Any:
    return settings.replace(transport={"backend": "smtp", "max_attempts": 2,
                                       "backoff_seconds": 0.01},
                            smtp={"host": sink.host, "port": sink.port, "connections": 1,
                                  "timeout": 5.0})


def messages_to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for rcpt, raw in sink.messages if rcpt == address]


def parts(msg: EmailMessage) -> tuple[str, str]:
    body, text = msg.get_body(("html",)), msg.get_body(("plain",))
    assert body is not None and text is not None
    return html.unescape(body.get_content()), text.get_content()


def test_featured_today_is_said_where_the_source_says_so(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    day = dt.date(2026, 3, 4)
    with session_scope(engine) as s:
        ada = s.scalars(select(Subscriber).where(Subscriber.email == ADA)).one()
        s.execute(update(Subscriber).where(Subscriber.id != ada.id).values(status="paused"))
    summary = run_send(via_sink(settings, smtp_sink), engine, day)
    assert summary.report.counts["sent"] == 1
    with session_scope(engine) as s:
        [row] = s.scalars(select(Delivery)).all()
        picks = list(row.entry_ids)
        titles = {e.id: e.title for e in s.scalars(select(Entry).where(Entry.id.in_(picks)))}
    # the same send again, on a fresh day, with the second pick featured that day
    with session_scope(engine) as s:
        s.execute(update(Entry).values(featured=None))
        s.execute(update(Entry).where(Entry.id == picks[1]).values(featured=day))
        s.execute(update(Entry).where(Entry.id == picks[2]).values(
            featured=day - dt.timedelta(days=5)))  # old news: not said
        s.query(Delivery).delete()
        from newsletter.store.models import Edition, SentEntry

        s.query(SentEntry).delete()
        s.query(Edition).delete()
    smtp_sink.messages.clear()
    assert run_send(via_sink(settings, smtp_sink), engine, day).report.counts["sent"] == 1
    [msg] = messages_to(smtp_sink, ADA)
    body, text = parts(msg)
    assert body.count("Featured today") == 1 and text.count("Featured today") == 1
    featured_block = text[text.index(titles[picks[1]][:40]):]
    assert "Featured today" in featured_block[:featured_block.index("Abstract:")]
    assert "Featured" not in text[text.index(titles[picks[2]][:40]):][:400].split("Abstract:")[0]
