"""Bounces from Debian's Postfix, read back over IMAP, POP3 and Maildir from Dovecot.

An unknown local user is accepted, then bounced by Postfix: the RFC 3464 report goes
to the message's VERP envelope sender (``bounces+<token>@digest.test``), lands in the
bounce mailbox, and ``fetch`` marks that subscriber bounced and nobody else.
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from sqlalchemy import select

from newsletter.bounces.verp import Verp
from newsletter.config import BouncesConfig
from newsletter.service.bounces import fetch
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Delivery, Edition, Subscriber, SubscriberStatus

pytestmark = pytest.mark.slow
KEYS = ["rehearsal key"]
ROOT = Path(__file__).resolve().parent.parent


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


def operator_config(tmp_path: Path, postfix, *, password: str | None = None,  # type: ignore[no-untyped-def]
                    ca_file: str | None = None, transport: str = "", smtp: str = "",
                    more: str = "", port: int | None = None) -> Path:
    """What an operator sending through their own Postfix writes: submission with
    STARTTLS and AUTH; ``transport``/``smtp``: more keys of those sections, ``more``:
    more sections; ``port`` another of Postfix's (``rules_port``)."""
    path = tmp_path / "config.toml"
    path.write_text(f"""
[database]
url = "sqlite:///{tmp_path / 'subscribers.db'}"
[sender]
from_address = "digest@{postfix.domain}"
postal_address = "1 Example Street, Springfield"
[web]
base_url = "https://digest.example.org"
[transport]
backend = "smtp"
backoff_seconds = 0.01
{transport}
[smtp]
host = "127.0.0.1"
port = {port or postfix.submission_port}
security = "starttls"
username = "{postfix.smtp_user}"
password = "{password or postfix.smtp_password}"
ca_file = "{ca_file or postfix.ca_file}"
{smtp}
{more}
""")
    return path


def journey_config(tmp_path: Path, postfix, dovecot, *, password: str | None = None) -> Path:  # type: ignore[no-untyped-def]
    """``operator_config`` with a VERP return path and the From address both
    delivered to one mailbox (digest@, a +tag ignored), read over IMAP (STARTTLS)."""
    user = f"digest@{postfix.domain}"
    mailbox = (f"imap://{user.replace('@', '%40')}:{dovecot.users[user]}"
               f"@127.0.0.1:{dovecot.imap_port}/INBOX")
    return operator_config(tmp_path, postfix, password=password, more=f"""
[bounces]
return_path = "digest+{{token}}@{postfix.domain}"
mailbox = "{mailbox}"
ca_file = "{dovecot.ca_file}"
""")


def seed(cli, config: str, tmp_path: Path, emails: list[str]) -> Any:  # type: ignore[no-untyped-def]
    """The sample papers ingested and ``emails`` subscribed (made directly: sign-ups
    refuse the reserved .test domain these servers serve); the database's engine."""
    result = cli("--config", config, "ingest",
                 str(ROOT / "newsletter" / "data" / "sample_papers.json"))
    assert result.code == 0, result.stderr
    engine = get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")
    with session_scope(engine) as s:
        s.add_all([Subscriber(email=e, keywords="diffusion, transformer") for e in emails])
    return engine


def delivered_to(db: Path) -> dict[str, list[str]]:
    """Edition day → the addresses it has a ledger row for."""
    engine = get_engine(f"sqlite:///{db}")
    with session_scope(engine) as s:
        rows = s.execute(select(Edition.day, Subscriber.email)
                         .join(Delivery, Delivery.edition_id == Edition.id)
                         .join(Subscriber, Subscriber.id == Delivery.subscriber_id)).all()
    out: dict[str, list[str]] = {}
    for day, email in rows:
        out.setdefault(day.isoformat(), []).append(email)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("kind", ["imap", "pop3s"])
def test_check_opens_the_bounce_mailbox_and_says_a_refused_login_plainly(
        kind: str, dovecot) -> None:  # type: ignore[no-untyped-def]
    """`newsletter check` logs in to the bounce mailbox as it logs in to SMTP: a wrong
    password was ✓ there, then failed every ten minutes in `newsletter run`. The
    server's answer is said as text (it was the repr of its bytes) and the user apart
    from the host (an address as user read as "bounces@digest.test@127.0.0.1")."""
    from newsletter.config import SenderConfig
    from newsletter.delivery.check import FAIL, OK, check_bounces

    port = dovecot.imap_port if kind == "imap" else dovecot.pop3s_port
    user = dovecot.user.replace("@", "%40")

    def item(password: str, **more: str) -> Any:
        config = BouncesConfig(
            mailbox=f"{kind}://{user}:{password}@127.0.0.1:{port}/INBOX",
            ca_file=str(dovecot.ca_file), **more)  # type: ignore[arg-type]
        return check_bounces(config, SenderConfig(), "smtp", probe=True)

    good = item(dovecot.password)
    assert good.status == OK and "opened" in good.detail, good
    bad = item("not the password")
    assert bad.status == FAIL, bad
    assert "b'" not in bad.detail and "@127.0.0.1" not in bad.detail, bad.detail
    assert f"(user {dovecot.user})" in bad.detail, bad.detail
    if kind == "imap":
        moved = item(dovecot.password, after="move")  # no move_to: fetch would refuse
        assert moved.status == FAIL and "move_to" in moved.detail, moved
    # a password IMAP's LOGIN cannot send: a ✗ naming why, not a traceback
    accented = item("S3cr%C3%A9t-pw")
    assert accented.status == FAIL and "S3cr" not in accented.detail, accented


def test_check_changes_nothing_in_the_bounce_mailbox(dovecot) -> None:  # type: ignore[no-untyped-def]
    """`check` looks at the IMAP folder (EXAMINE) and leaves without CLOSE: selected and
    closed, it expunged every message another client had marked deleted."""
    import os

    from newsletter.config import SenderConfig
    from newsletter.delivery.check import OK, check_bounces

    cur = dovecot.mailboxes.maildir(dovecot.user) / "cur"
    msg = b"From: a@example.org\r\nTo: bounces@digest.test\r\nSubject: keep\r\n\r\nhi\r\n"
    (cur / "1700000000.M1P1.test:2,ST").write_bytes(msg)  # seen, marked deleted
    (cur / "1700000001.M2P1.test:2,S").write_bytes(msg)  # seen
    os.system(f"chown -R --reference={cur.parent} {cur.parent}")  # noqa: S605 - the test's own folder
    before = sorted(p.name for p in cur.iterdir())
    user = dovecot.user.replace("@", "%40")
    config = BouncesConfig(
        mailbox=f"imap://{user}:{dovecot.password}@127.0.0.1:{dovecot.imap_port}/INBOX",
        ca_file=str(dovecot.ca_file))
    try:
        assert check_bounces(config, SenderConfig(), "smtp", probe=True).status == OK
        assert sorted(p.name for p in cur.iterdir()) == before
    finally:  # the shared mailbox as the other tests expect it
        for name in ("1700000000.M1P1.test:2,ST", "1700000001.M2P1.test:2,S"):
            (cur / name).unlink(missing_ok=True)


def test_journey_send_bounce_fetch_and_the_next_day_skips_them(
        cli, postfix, dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A subscriber whose address does not exist: `newsletter send` through Postfix
    (STARTTLS + AUTH), Postfix accepts and bounces, the DSN reaches the VERP address's
    mailbox, `bounces fetch` over IMAP marks them bounced, and the next day's edition
    is not sent to them."""
    config = str(journey_config(tmp_path, postfix, dovecot))
    ghost, live = f"nobody@{postfix.domain}", f"ada@{postfix.domain}"

    def run(*args: str) -> str:
        result = cli("--config", config, *args)
        assert result.code == 0, (args, result.stdout, result.stderr)
        return str(result.stdout)

    seed(cli, config, tmp_path, [live, ghost])
    run("send", "--date", "2025-12-26", "--yes", "--force")
    postfix.flush()
    [report] = postfix.wait_for("digest", 1)
    assert report.get_content_type() == "multipart/report"
    assert postfix.wait_for("ada", 1)
    fetched = json.loads(run("bounces", "fetch", "--json"))
    assert fetched["hard"] == 1 and fetched["bounced"] == [ghost], fetched
    status = json.loads(run("status", "--json"))
    assert status["subscribers"]["bounced"] == 1 and status["subscribers"]["active"] == 1
    run("ingest", str(ROOT / "tests" / "payloads" / "dailypapers.json"))  # the next day's papers
    second = cli("--config", config, "send", "--date", "2025-12-27", "--yes", "--force")
    assert second.code == 0 and "planned 1 " in second.stderr, second.stderr
    postfix.flush()
    ledger = delivered_to(tmp_path / "subscribers.db")
    assert ledger["2025-12-26"] == sorted([live, ghost])
    assert ledger["2025-12-27"] == [live]  # planned and sent, the ghost left out
    assert len(postfix.messages("digest")) == 1  # no second report: nothing sent there


def test_journey_a_mailto_unsubscribe_sent_through_postfix_unsubscribes(
        cli, postfix, dovecot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The reader's mail client follows List-Unsubscribe's mailto: (address and
    subject as the header gives them); the request travels through Postfix to the
    mailbox, and `bounces fetch` unsubscribes exactly that reader."""
    config = str(journey_config(tmp_path, postfix, dovecot))
    ada, bob = f"ada@{postfix.domain}", f"bob@{postfix.domain}"

    def run(*args: str) -> str:
        result = cli("--config", config, *args)
        assert result.code == 0, (args, result.stdout, result.stderr)
        return str(result.stdout)

    seed(cli, config, tmp_path, [ada, bob])
    run("send", "--date", "2025-12-26", "--yes", "--force")
    [digest] = postfix.wait_for("ada", 1)
    mailto = next(u.strip(" <>") for u in str(digest["List-Unsubscribe"]).split(",")
                  if "mailto:" in u)
    target = urlsplit(mailto)
    subject = unquote(parse_qs(target.query)["subject"][0])
    assert target.path == f"digest@{postfix.domain}" and subject.startswith("unsubscribe ")
    request = (f"From: {ada}\r\nTo: {target.path}\r\nSubject: {subject}\r\n"
               f"Message-ID: <unsub.1@{postfix.domain}>\r\n\r\n\r\n")
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=20) as smtp:
        smtp.starttls(context=postfix.ssl_context())
        smtp.sendmail(ada, [target.path], request.encode())
    postfix.flush()
    postfix.wait_for("digest", 1)
    fetched = json.loads(run("bounces", "fetch", "--json"))
    assert fetched["unsubscribes"] == 1 and fetched["hard"] == 0, fetched
    with session_scope(get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")) as s:
        statuses = dict(s.execute(select(Subscriber.email, Subscriber.status)).all())
    assert statuses == {ada: SubscriberStatus.UNSUBSCRIBED, bob: SubscriberStatus.ACTIVE}
