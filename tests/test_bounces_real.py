"""Bounces from Debian's Postfix, read back over IMAP, POP3 and Maildir from Dovecot.

An unknown local user is accepted, then bounced by Postfix: the RFC 3464 report goes
to the message's VERP envelope sender (``bounces+<token>@digest.test``), lands in the
bounce mailbox, and ``fetch`` marks that subscriber bounced and nobody else.
"""

from __future__ import annotations

import datetime as dt
import smtplib
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.bounces.verp import Verp
from newsletter.config import BouncesConfig
from newsletter.service.bounces import fetch
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Delivery, Edition, Subscriber, SubscriberStatus

pytestmark = pytest.mark.slow
KEYS = ["rehearsal key"]


def send_and_bounce(postfix, engine, ghost: str, return_path: str) -> None:  # type: ignore[no-untyped-def]
    """A planned, sent delivery to ``ghost`` (no such mailbox), sent through Postfix's
    submission port with STARTTLS and AUTH; waits for the report in the bounce box."""
    with session_scope(engine) as s:
        edition = Edition(day=dt.date(2026, 12, 2), slot="")
        s.add(edition)
        s.flush()
        # Rows made directly: the .test domain is a reserved name that the address
        # policy of sign-ups may refuse; the mail servers here serve it.
        live = Subscriber(email=f"ada@{postfix.domain}", keywords="x")
        sub = Subscriber(email=ghost, keywords="x")
        s.add_all([live, sub])
        s.flush()
        for who in (live, sub):
            s.add(Delivery(edition_id=edition.id, subscriber_id=who.id, day=edition.day,
                           status="sent", message_id=f"<{who.id}.e@digest.test>"))
        s.flush()
        row = s.scalar(select(Delivery).where(Delivery.subscriber_id == sub.id))
        assert row is not None
        envelope = Verp(return_path, tuple(KEYS)).address(row.id, sub.id)
    body = (f"From: digest@{postfix.domain}\r\nTo: {ghost}\r\nSubject: Your papers\r\n"
            f"Message-ID: <{sub.id}.e@digest.test>\r\n\r\nToday's papers.\r\n")
    with smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=20) as smtp:
        smtp.starttls(context=postfix.ssl_context())
        smtp.login(postfix.smtp_user, postfix.smtp_password)
        smtp.sendmail(envelope, [ghost], body.encode())
    postfix.flush()
    reports = postfix.wait_for("bounces", 1)
    assert reports[0].get_content_type() == "multipart/report"


@pytest.mark.parametrize("kind", ["imaps", "imap", "pop3s", "pop3", "maildir"])
def test_a_postfix_bounce_read_from_the_mailbox_bounces_the_subscriber(
        kind: str, postfix, dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine = get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")
    return_path = f"bounces+{{token}}@{postfix.domain}"
    ghost = f"nobody-{kind}@{postfix.domain}"
    send_and_bounce(postfix, engine, ghost, return_path)
    port = {"imaps": dovecot.imaps_port, "imap": dovecot.imap_port,
            "pop3s": dovecot.pop3s_port, "pop3": dovecot.pop3_port}.get(kind)
    url = (f"maildir:{postfix.maildir('bounces')}" if kind == "maildir" else
           f"{kind}://{dovecot.user.replace('@', '%40')}:{dovecot.password}@127.0.0.1:{port}/INBOX")
    config = BouncesConfig(return_path=return_path, mailbox=url, ca_file=str(dovecot.ca_file),
                           after="delete" if kind.startswith("pop3") else "flag")
    report = fetch(engine, config, KEYS)
    assert report.counts["hard"] == 1, (report.as_dict(), postfix.log()[-2000:])
    assert report.bounced == [ghost]
    with session_scope(engine) as s:
        statuses = dict(s.execute(select(Subscriber.email, Subscriber.status)).all())
    assert statuses == {ghost: SubscriberStatus.BOUNCED,
                        f"ada@{postfix.domain}": SubscriberStatus.ACTIVE}
    # Read again: nothing new is acted on (flagged, filed or deleted as configured).
    again = fetch(engine, config, KEYS)
    assert again.counts["hard"] == 0
