"""The bounce mailbox as operators reach it: ``newsletter bounces fetch``, the
scheduler's job, the metrics and ``status``'s subscriber counts."""

from __future__ import annotations

import datetime as dt
import email.policy
import json
import logging
import socket
from email.parser import BytesParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from newsletter.app import App
from newsletter.bounces.verp import Verp
from newsletter.config import Settings
from newsletter.delivery.scheduler import build_scheduler, fetch_bounces
from newsletter.errors import ConfigError
from newsletter.observe.metrics import metrics
from newsletter.store.db import get_engine, session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import Delivery, Edition, Subscriber

from .conftest import SmtpSink, World
from .editions_support import run_send
from .test_bounces import dsn, maildir

DAY = dt.date(2025, 12, 26)


def bounce_count(kind: str) -> float:
    for family in text_string_to_metric_families(metrics().exposition().decode()):
        for s in family.samples:
            if s.name == "newsletter_bounces_total" and s.labels == {"kind": kind}:
                return s.value
    return 0.0


def hard_bounces() -> float:
    return bounce_count("hard")


def sent_to(db: Path, email: str, message_id: str) -> None:
    """A sent delivery of one edition to ``email`` (already a subscriber)."""
    engine = get_engine(f"sqlite:///{db}")
    with session_scope(engine) as s:
        edition = Edition(day=dt.date(2026, 12, 1), slot="")
        s.add(edition)
        s.flush()
        sub = s.scalar(select(Subscriber).where(Subscriber.email == email))
        assert sub is not None
        s.add(Delivery(edition_id=edition.id, subscriber_id=sub.id, day=edition.day,
                       status="sent", message_id=message_id))


def test_bounces_fetch_prints_counts_and_bounces_the_subscriber(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    box = maildir(tmp_path / "box")
    env = {"NEWSLETTER_BOUNCES__MAILBOX": f"maildir:{box}"}
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "x").code == 0
    assert cli("subscribers", "add", "bob@example.org", "--keywords", "x").code == 0
    sent_to(tmp_path / "subscribers.db", "ada@example.org", "<a1@digest.example.org>")
    (box / "new" / "1.msg").write_bytes(dsn("digest@example.org", "ada@example.org", "5.1.1",
                                            message_id="<a1@digest.example.org>"))
    (box / "new" / "2.msg").write_bytes(b"Subject: hi\r\n\r\na note\r\n")
    before = hard_bounces()
    result = cli("bounces", "fetch", env=env)
    assert result.code == 0, result.stderr
    assert "hard 1, soft 0, complaints 0, unsubscribes 0, auto-replies ignored 0" in result.stdout
    assert "unmatched 0, unknown 1" in result.stdout
    assert "bounced: ada@example.org" in result.stdout
    assert hard_bounces() - before == 1
    again = cli("bounces", "fetch", "--json", env=env)
    assert json.loads(again.stdout)["hard"] == 0
    status = cli("status", "--json")
    assert json.loads(status.stdout)["subscribers"] | {} == {
        "pending": 0, "active": 1, "paused": 0, "unsubscribed": 0, "bounced": 1,
        "complained": 0}
    assert "subscribers: pending 0, active 1, paused 0, unsubscribed 0, bounced 1" in \
        cli("status").stdout


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("url, fragment", [
    ("maildir:/nonexistent/box", "not a Maildir"),
    ("imap://u:secret@127.0.0.1:{port}/INBOX", "cannot reach"),
    ("pop3s://u:secret@127.0.0.1:{port}/", "cannot reach"),
])
def test_a_bad_or_unreachable_mailbox_is_one_line(cli, url: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("bounces", "fetch",
                 env={"NEWSLETTER_BOUNCES__MAILBOX": url.format(port=closed_port())})
    assert result.code != 0
    line = result.stderr.strip()
    assert fragment in line and "\n" not in line and "secret" not in line
    assert "Traceback" not in result.stderr


def test_no_mailbox_configured_is_one_line(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("bounces", "fetch")
    assert result.code != 0 and "[bounces] mailbox is not set" in result.stderr


def test_the_scheduler_reads_the_mailbox_and_survives_a_broken_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings().replace(database={"url": f"sqlite:///{tmp_path / 'x.db'}"})
    assert "bounces" not in {j.id for j in build_scheduler(App(settings)).get_jobs()}
    box = maildir(tmp_path / "box")
    with_box = settings.replace(bounces={"mailbox": f"maildir:{box}", "fetch_minutes": 7})
    jobs = {j.id: j for j in build_scheduler(App(with_box)).get_jobs()}
    assert jobs["bounces"].trigger.interval == dt.timedelta(minutes=7)
    from newsletter.store.db import upgrade

    upgrade(get_engine(with_box.database.url))
    (box / "new" / "1.msg").write_bytes(b"Subject: hi\r\n\r\na note\r\n")
    report = fetch_bounces(App(with_box))
    assert report is not None and report.counts["unknown"] == 1
    broken = settings.replace(bounces={
        "mailbox": f"imap://u:secret@127.0.0.1:{closed_port()}/INBOX"})
    with caplog.at_level(logging.ERROR, logger="newsletter.scheduler"):
        assert fetch_bounces(App(broken)) is None
    assert any("cannot reach" in r.getMessage() and "secret" not in r.getMessage()
               for r in caplog.records)


def smtp(settings: Settings, sink: SmtpSink, **bounces: object) -> Settings:
    return settings.replace(transport={"backend": "smtp", "backoff_seconds": 0.01},
                            smtp={"host": sink.host, "port": sink.port}, bounces=bounces)


@pytest.mark.slow  # ~2 s: a send through SMTP
def test_each_message_leaves_with_the_verp_address_of_its_delivery(
        world: World, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    settings = smtp(world.settings, smtp_sink, return_path="bounces+{token}@digest.example.org",
                    mailbox=f"maildir:{maildir(tmp_path / 'box')}")
    summary = run_send(settings, world.engine, DAY)
    assert summary.report.counts["sent"] == len(smtp_sink.messages) >= 3
    with session_scope(world.engine) as s:
        keys = secret_keys(settings.web, s)
        rows = {e: (d, sub) for e, d, sub in s.execute(
            select(Subscriber.email, Delivery.id, Subscriber.id)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id))}
    verp = Verp(settings.bounces.return_path or "", tuple(keys))
    for rcpt, data in smtp_sink.messages:
        sender = smtp_sink.senders[rcpt]
        assert sender == verp.address(*rows[rcpt]), sender
        assert verp.read(sender) == rows[rcpt]
        head = BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)
        assert str(head["From"]).endswith("<digest@example.org>")
        unsub = str(head["List-Unsubscribe"])
        assert "<mailto:digest@example.org?subject=unsubscribe%20" in unsub, unsub


@pytest.mark.slow  # ~2 s: a send through SMTP
def test_without_return_path_or_mailbox_the_from_address_and_no_mailto(
        world: World, smtp_sink: SmtpSink) -> None:
    run_send(smtp(world.settings, smtp_sink), world.engine, DAY)
    assert smtp_sink.messages
    for rcpt, data in smtp_sink.messages:
        assert smtp_sink.senders[rcpt] == "digest@example.org"
        head = BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)
        assert "mailto:" not in str(head["List-Unsubscribe"])
        assert "/unsubscribe/" in str(head["List-Unsubscribe"])


def test_check_says_whether_mailto_unsubscribes_are_read(tmp_path: Path) -> None:
    from newsletter.delivery.check import check_bounces

    base = Settings().replace(transport={"backend": "smtp"})
    item = check_bounces(base.bounces, base.sender, "smtp")
    assert item.ok and "no mailto:" in item.line() and "[bounces] mailbox" in item.line()
    on = check_bounces(base.replace(bounces={"mailbox": f"maildir:{tmp_path}",
                                             "return_path": "b+{token}@example.org"}).bounces,
                       base.sender, "smtp")
    assert on.ok and "mailto: unsubscribes go to" in on.line()
    with pytest.raises(ConfigError, match=r"\[bounces\] return_path: expected one \{token\}"):
        base.replace(bounces={"return_path": "bounces@example.org"})
