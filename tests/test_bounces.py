"""Reading the bounce mailbox: reports matched to their delivery (VERP, else the
original Message-ID), acted on through the lifecycle once, whatever happens between
the commit and the mailbox being told; on a real Maildir and both databases."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.bounces.mailboxes import open_mailbox
from newsletter.bounces.verp import Verp
from newsletter.config import BouncesConfig
from newsletter.render.links import Signer
from newsletter.service.bounces import fetch
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import (
    Delivery,
    Edition,
    Event,
    MailReport,
    Subscriber,
    SubscriberStatus,
)
from newsletter.store.subscribers import add

KEYS = ["the signing key"]
RETURN_PATH = "bounces+{token}@digest.example.org"
VERP = Verp(RETURN_PATH, tuple(KEYS))
_seq = itertools.count()


def maildir(root: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def drop(box: Path, raw: bytes) -> None:
    (box / "new" / f"{next(_seq)}.msg").write_bytes(raw)


def config(box: Path, **kw: object) -> BouncesConfig:
    return BouncesConfig(return_path=RETURN_PATH, mailbox=f"maildir:{box}", **kw)  # type: ignore[arg-type]


def dsn(to: str, recipient: str, status: str, action: str = "failed",
        message_id: str = "<orig@digest.example.org>") -> bytes:
    """A delivery-status report shaped as Postfix writes one."""
    return f"""From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"

--B0UND
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected

--B0UND
Content-Type: text/rfc822-headers

From: digest@digest.example.org
To: {recipient}
Message-ID: {message_id}
Subject: Your papers

--B0UND--
""".replace("\n", "\r\n").encode()


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> tuple[object, list[tuple[int, int, str]]]:
    """Three subscribers, each with a sent delivery of one edition."""
    engine = get_engine(db_url)
    rows = []
    with session_scope(engine) as s:
        edition = Edition(day=dt.date(2026, 12, 1), slot="")
        s.add(edition)
        s.flush()
        for i, email in enumerate(["ada@example.org", "bob@example.org", "cy@example.org"]):
            sub = add(s, email, keywords="diffusion")
            d = Delivery(edition_id=edition.id, subscriber_id=sub.id, day=edition.day,
                         status="sent", message_id=f"<m{i}.x@digest.example.org>")
            s.add(d)
            s.flush()
            rows.append((d.id, sub.id, email))
    return engine, rows


def status_of(engine: object, email: str) -> str:
    with session_scope(engine) as s:  # type: ignore[arg-type]
        return str(s.scalar(select(Subscriber.status).where(Subscriber.email == email)))


def test_hard_bounce_by_verp_bounces_the_subscriber_once(world, tmp_path: Path) -> None:
    engine, rows = world
    box = maildir(tmp_path / "mail")
    delivery_id, sub_id, email = rows[0]
    raw = dsn(VERP.address(delivery_id, sub_id), email, "5.1.1")
    drop(box, raw)
    report = fetch(engine, config(box), KEYS)
    assert report.counts["hard"] == 1 and report.bounced == [email]
    assert status_of(engine, email) == SubscriberStatus.BOUNCED
    assert status_of(engine, rows[1][2]) == SubscriberStatus.ACTIVE
    assert list((box / "new").iterdir()) == [] and len(list((box / "cur").iterdir())) == 1
    # The same message again (the mailbox was not told in time): acted on once.
    drop(box, raw)
    again = fetch(engine, config(box), KEYS)
    assert again.counts["already"] == 1 and again.counts["hard"] == 0
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "bounced")) == 1
        row = s.get(Delivery, delivery_id)
        assert row is not None and "5.1.1" in row.reason


def test_lost_return_path_is_matched_by_message_id(world, tmp_path: Path) -> None:
    engine, rows = world
    box = maildir(tmp_path / "mail")
    _, _, email = rows[1]
    drop(box, dsn("bounces@digest.example.org", email, "5.1.1",
                  message_id="<m1.x@digest.example.org>"))
    assert fetch(engine, config(box), KEYS).counts["hard"] == 1
    assert status_of(engine, email) == SubscriberStatus.BOUNCED


def test_forged_or_address_only_reports_change_nothing(world, tmp_path: Path) -> None:
    engine, rows = world
    box = maildir(tmp_path / "mail")
    delivery_id, sub_id, email = rows[0]
    forged = VERP.address(delivery_id, sub_id).replace("bounces+", "bounces+z")
    drop(box, dsn(forged, email, "5.1.1", message_id="<unknown@elsewhere>"))
    # A valid token for one delivery does not act on another subscriber.
    other = Verp(RETURN_PATH, tuple(KEYS)).address(delivery_id, rows[2][1])
    drop(box, dsn(other, email, "5.1.1", message_id="<unknown2@elsewhere>"))
    report = fetch(engine, config(box), KEYS)
    assert report.counts["unmatched"] == 2
    assert all(status_of(engine, e) == SubscriberStatus.ACTIVE for _, _, e in rows)


def test_soft_bounces_count_messages_up_to_the_limit(world, tmp_path: Path) -> None:
    """soft_limit counts messages that soft-bounced, not reports: a server may report
    one message several times, and delay warnings (the server is still trying) are
    notices. Three reports of one message, then two delay warnings: still active; a
    soft bounce of two more messages within soft_days: bounced."""
    engine, rows = world
    box = maildir(tmp_path / "mail")
    delivery_id, sub_id, email = rows[2]
    with session_scope(engine) as s:  # two more editions' emails to the same person
        more = []
        for day in (2, 3):
            edition = Edition(day=dt.date(2026, 12, day), slot="")
            s.add(edition)
            s.flush()
            d = Delivery(edition_id=edition.id, subscriber_id=sub_id, day=edition.day,
                         status="sent", message_id=f"<day{day}.x@digest.example.org>")
            s.add(d)
            s.flush()
            more.append(d.id)
    for n in range(3):
        drop(box, dsn(VERP.address(delivery_id, sub_id), email, "4.2.2",
                      message_id=f"<s{n}@x>"))
    for n in range(2):
        drop(box, dsn(VERP.address(delivery_id, sub_id), email, "4.2.2", action="delayed",
                      message_id=f"<w{n}@x>"))
    first = fetch(engine, config(box, soft_limit=3), KEYS)
    assert first.counts["soft"] == 3 and first.counts["notices"] == 2
    assert status_of(engine, email) == SubscriberStatus.ACTIVE  # one message so far
    drop(box, dsn(VERP.address(more[0], sub_id), email, "4.2.2", message_id="<t1@x>"))
    assert fetch(engine, config(box, soft_limit=3), KEYS).bounced == []
    drop(box, dsn(VERP.address(more[1], sub_id), email, "4.2.2", message_id="<t2@x>"))
    report = fetch(engine, config(box, soft_limit=3), KEYS)
    assert report.counts["soft"] == 1 and report.bounced == [email]  # the third message
    assert status_of(engine, email) == SubscriberStatus.BOUNCED


def test_a_policy_refusal_is_not_a_bad_address(world, tmp_path: Path) -> None:
    """A failed DSN with 5.7.x (DMARC, a blocklist, content: the receiver's policy
    refused our mail) says nothing of the address: the delivery records why, the
    subscriber stays active (as a 5.7.x refusal at RCPT time leaves them)."""
    engine, rows = world
    box = maildir(tmp_path / "mail")
    delivery_id, sub_id, email = rows[0]
    drop(box, dsn(VERP.address(delivery_id, sub_id), email, "5.7.26"))
    report = fetch(engine, config(box), KEYS)
    assert report.counts["refused"] == 1 and report.counts["hard"] == 0
    assert report.bounced == [] and status_of(engine, email) == SubscriberStatus.ACTIVE
    with session_scope(engine) as s:
        row = s.get(Delivery, delivery_id)
        assert row is not None and "5.7.26" in row.reason and "refused" in row.reason


def test_complaint_mailto_unsubscribe_and_auto_reply(world, tmp_path: Path) -> None:
    engine, rows = world
    box = maildir(tmp_path / "mail")
    data = Path(__file__).parent / "bounces_data" / "other"
    arf = (data / "arf_rfc5965.eml").read_bytes().replace(
        b"<8787KJKJ3K4J3K4J3K4J3.mail@digest.example.org>", b"<m0.x@digest.example.org>")
    drop(box, arf)
    with session_scope(engine) as s:  # links carry the subscriber row's nonce
        nonce = s.scalar(select(Subscriber.link_nonce).where(Subscriber.id == rows[1][1]))
    token = Signer(KEYS).token("unsubscribe", rows[1][1], nonce=nonce)
    drop(box, (data / "unsubscribe_mailto.eml").read_bytes().replace(
        b"1f.UxhyPabcdefghijklmnopq", token.encode()))
    drop(box, (data / "autoreply_exchange.eml").read_bytes())
    drop(box, b"Subject: hello\r\n\r\njust a note to the bounce address\r\n")
    report = fetch(engine, config(box), KEYS)
    assert report.as_dict() | {"bounced": []} == {
        "hard": 0, "soft": 0, "complaints": 1, "unsubscribes": 1, "auto_replies": 1,
        "notices": 0, "unmatched": 0, "unknown": 1, "already": 0, "refused": 0,
        "bounced": []}
    assert status_of(engine, rows[0][2]) == SubscriberStatus.COMPLAINED
    assert status_of(engine, rows[1][2]) == SubscriberStatus.UNSUBSCRIBED
    # The unknown message stays where a person can read it, and is not counted again.
    assert len(list((box / "new").iterdir())) == 1
    assert fetch(engine, config(box), KEYS).counts["unknown"] == 0
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(MailReport)) == 4


def test_delete_after_processing(world, tmp_path: Path) -> None:
    engine, rows = world
    box = maildir(tmp_path / "mail")
    delivery_id, sub_id, email = rows[0]
    drop(box, dsn(VERP.address(delivery_id, sub_id), email, "5.1.1"))
    fetch(engine, config(box, after="delete"), KEYS)
    assert list((box / "new").iterdir()) == [] and list((box / "cur").iterdir()) == []


def test_a_bad_mailbox_url_is_one_line() -> None:
    from newsletter.bounces.mailboxes import MailboxError

    for url, fragment in [("ftp://x", "expected one of"), ("imaps://host/INBOX", "user:password"),
                          ("maildir:", "needs a path"), ("imap://u:p@h:99999/", "port")]:
        with pytest.raises(MailboxError, match=fragment) as info:
            open_mailbox(url)
        assert "\n" not in str(info.value) and "p@" not in str(info.value)
    with pytest.raises(MailboxError, match="not a Maildir"):
        open_mailbox("maildir:/nonexistent/box")


def test_a_message_id_cannot_be_guessed_from_the_ones_a_reader_saw() -> None:
    """A report quoting a Message-ID we sent is acted on for that delivery, so the IDs
    must not be guessable from one's own: they were this builder's one random prefix
    and a counter (``<day.edition.subscriber.PREFIXn@domain>``), so a subscriber who
    saw theirs could write everyone else's and have them marked bounced or
    complained. Now no two share any structure beyond their tag."""
    import os.path

    from newsletter.config import SenderConfig
    from newsletter.render.mime import MimeBuilder

    builder = MimeBuilder(SenderConfig(from_address="digest@example.org"))
    ids = [builder.message_id(f"20261206.1.{n}") for n in range(100)]
    assert len(set(ids)) == len(ids)
    parts = [i[1:].split("@")[0].rsplit(".", 1)[1] for i in ids]
    assert all(len(p) == 20 for p in parts)  # 80 bits each
    # the old scheme shared 12 characters between all of them; two random parts share
    # a first 7 with odds of 1 in 268 million (here 4,950 pairs)
    shared = max(len(os.path.commonprefix([a, b]))
                 for i, a in enumerate(parts) for b in parts[i + 1:])
    assert shared < 7, shared
    # the same tag and builder never give the same ID twice (a counter is in the hash)
    assert builder.message_id("x") != builder.message_id("x")


def test_a_late_hard_bounce_keeps_a_complaint_and_an_unsubscription(world, tmp_path: Path
                                                                    ) -> None:
    """A hard bounce that arrives after the person complained or unsubscribed is
    recorded (an event, the count) and changes neither: a complaint is the stronger
    stop, and an unsubscribed person must still be able to come back, which only
    "unsubscribed" allows. An active one is bounced as before."""
    from newsletter.store import lifecycle

    engine, rows = world
    box = maildir(tmp_path / "mail")
    (d0, s0, complained), (d1, s1, unsubscribed), (d2, s2, active) = rows
    with session_scope(engine) as s:
        for sub_id, change in ((s0, lifecycle.complain), (s1, lifecycle.unsubscribe)):
            sub = s.get(Subscriber, sub_id)
            assert sub is not None
            change(s, sub, by="test")
    for delivery_id, sub_id, email in rows:
        drop(box, dsn(VERP.address(delivery_id, sub_id), email, "5.1.1"))
    report = fetch(engine, config(box), KEYS)
    assert report.counts["hard"] == 3
    assert status_of(engine, complained) == SubscriberStatus.COMPLAINED
    assert status_of(engine, unsubscribed) == SubscriberStatus.UNSUBSCRIBED
    assert status_of(engine, active) == SubscriberStatus.BOUNCED
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "bounced")) == 3
        counts = dict(s.execute(select(Subscriber.id, Subscriber.bounce_count)).all())
    assert counts == {s0: 1, s1: 1, s2: 1}


def test_removing_a_subscriber_deletes_the_reports_about_their_mail(
        world, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """`subscribers remove` deletes the subscriber and their history: the bounce
    mailbox's reports about their mail too (``lifecycle.about_their_mail``, what an
    erasure deletes). They stayed, their subscriber and delivery unset, with the
    address and their mail server's words in them. Another reader's report stays."""
    engine, rows = world
    box = maildir(tmp_path / "mail")
    for delivery_id, sub_id, email in rows[:2]:
        drop(box, dsn(VERP.address(delivery_id, sub_id), email, "4.2.2"))
    assert fetch(engine, config(box), KEYS).counts["soft"] == 2
    removed = cli("subscribers", "remove", "ada@example.org", "--yes",
                  env={"NEWSLETTER_DATABASE__URL": engine.url.render_as_string(
                      hide_password=False)})
    assert removed.code == 0, removed.stderr
    with session_scope(engine) as s:
        left = s.execute(select(MailReport.subscriber_id, MailReport.detail)
                         .order_by(MailReport.id)).all()
    assert [sub for sub, _ in left] == [rows[1][1]]
    assert "ada@example.org" not in str(left)
