"""Sending through a real SMTP server: the ledger, resume, faults, bounces."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from newsletter.config import Settings
from newsletter.delivery.ratelimit import Window
from newsletter.errors import SendingStopped
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Event, SentEntry, Subscriber

from .conftest import ROOT, SmtpSink
from .editions_support import run_preview, run_send

DAY = dt.date(2025, 12, 26)
ACTIVE = ["ada@example.org", "grace@example.org", "alan@example.org", "katherine@example.org",
          "edsger@example.org", "barbara@example.org", "donald@example.org",
          "margaret@example.org"]


def smtp_settings(settings: Settings, sink: SmtpSink, **transport: object) -> Settings:
    return settings.replace(
        transport={"backend": "smtp", "max_attempts": 8, "backoff_seconds": 0.01, **transport},
        smtp={"host": sink.host, "port": sink.port, "connections": 2, "timeout": 1.0})


def test_send_reaches_everyone_once_and_resumes_to_nothing(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    settings = smtp_settings(settings, smtp_sink)
    summary = run_send(settings, engine, DAY)
    assert summary.report.counts["sent"] == len(ACTIVE)
    assert sorted(r for r, _ in smtp_sink.messages) == sorted(ACTIVE)
    for _, data in smtp_sink.messages:
        msg = email.message_from_bytes(data, policy=email.policy.strict)
        assert not msg.defects and msg["List-Unsubscribe-Post"]
    again = run_send(settings, engine, DAY)
    assert again.report.counts["sent"] == 0 and len(smtp_sink.messages) == len(ACTIVE)
    with session_scope(engine) as s:
        counts = dict(s.execute(select(Delivery.status, func.count()).group_by(
            Delivery.status)).all())
        assert counts == {"sent": len(ACTIVE)}
        # the papers each one got are recorded, so tomorrow never repeats them
        assert s.scalar(select(func.count()).select_from(SentEntry)) > len(ACTIVE)


def test_next_edition_never_repeats_a_paper(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    run_send(settings, engine, DAY)
    with session_scope(engine) as s:
        first = {(d.subscriber_id, e) for d in s.scalars(select(Delivery)) for e in d.entry_ids}
    # New papers arrive, and a second edition goes out.
    from newsletter.service.ingest import ingest

    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(ROOT / "tests" / "payloads" / "dailypapers.json")])
    second = run_send(settings, engine, DAY + dt.timedelta(days=1))
    assert second.candidates == 3  # only what arrived since the previous edition
    with session_scope(engine) as s:
        rows = s.scalars(select(Delivery).where(Delivery.edition_id == second.edition.id))
        later = {(d.subscriber_id, e) for d in rows for e in d.entry_ids}
    assert not (first & later)


def test_permanent_550_fails_that_subscriber_only(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    smtp_sink.faults["grace@example.org"] = ["550 5.1.1 <grace@example.org>: user unknown"]
    summary = run_send(smtp_settings(settings, smtp_sink), engine, DAY)
    assert summary.report.counts == {"sent": len(ACTIVE) - 1, "failed": 1}
    assert smtp_sink.count("grace@example.org") == 0
    with session_scope(engine) as s:
        grace = s.scalar(select(Subscriber).where(Subscriber.email == "grace@example.org"))
        assert grace is not None and grace.status == "bounced" and grace.bounce_count == 1
        assert grace.updated_at > grace.created_at  # a change like every other
        [event] = s.scalars(select(Event).where(Event.subscriber_id == grace.id,
                                                Event.kind == "bounced"))
        assert event.detail["by"] == "bounce" and "5.1.1" in event.detail["error"]
        row = s.scalar(select(Delivery).where(Delivery.subscriber_id == grace.id))
        assert row is not None and row.status == "failed" and "5.1.1" in row.last_error


def test_transient_replies_are_retried(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    """A 421 (the server closing) is tried again within the run; a 4xx to RCPT TO
    (greylisting) is deferred at once, and sent by the next run once due."""
    smtp_sink.faults["ada@example.org"] = ["421 4.3.2 busy", "421 4.3.2 busy"]
    smtp_sink.faults["grace@example.org"] = ["451 4.7.1 greylisted"]
    summary = run_send(smtp_settings(settings, smtp_sink), engine, DAY)
    assert summary.report.counts["sent"] == len(ACTIVE) - 1
    assert summary.report.counts["deferred"] == 1
    assert smtp_sink.count("ada@example.org") == 1
    assert smtp_sink.count("grace@example.org") == 0
    with session_scope(engine) as s:  # the greylisting window passes
        s.execute(update(Delivery).where(Delivery.status == "deferred")
                  .values(next_try_at=dt.datetime(2000, 1, 1)))
    again = run_send(smtp_settings(settings, smtp_sink), engine, DAY)
    assert again.report.counts["sent"] == 1
    assert smtp_sink.count("grace@example.org") == 1


@pytest.mark.slow  # ~2 s: 48 recipients, random faults
def test_flaky_server_delivers_everything_eventually(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """421/451, connections dropped mid-DATA, stalls: all delivered, by the run and the
    tries after it (a message whose end got no answer is deferred, not sent again in
    the run: the server may have it; the sends an hour apart retry what is due); a
    duplicate only where the server stored a message and dropped the connection before
    replying."""
    settings, engine = world
    from newsletter.store import subscribers
    from newsletter.store.models import utcnow

    with session_scope(engine) as s:
        for i in range(40):
            subscribers.add(s, f"extra{i}@example.org", keywords="attention, diffusion")
    smtp_sink.random_faults = 0.25
    settings = smtp_settings(settings, smtp_sink, max_attempts=30, concurrency=4)
    everyone = ACTIVE + [f"extra{i}@example.org" for i in range(40)]
    start = utcnow()
    for hour in range(12):
        # several unanswered in a row stop a run (a sick server): the next one goes on
        with contextlib.suppress(SendingStopped):
            run_send(settings, engine, DAY, now=start + dt.timedelta(hours=hour))
        with session_scope(engine) as s:
            sent = s.scalar(select(func.count()).select_from(Delivery).where(
                Delivery.status == "sent"))
        if sent == len(everyone):
            break
    for rcpt in everyone:
        expected = 1 + smtp_sink.dropped_after_accept.count(rcpt)
        assert 1 <= smtp_sink.count(rcpt) <= expected, rcpt
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.status == "sent")) == len(everyone)


@pytest.mark.slow  # ~2.5 s: two sends with retries
def test_dead_server_fails_cleanly_and_a_rerun_finishes(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    from .conftest import free_port

    dead = settings.replace(transport={"backend": "smtp", "max_attempts": 2,
                                       "backoff_seconds": 0.01},
                            smtp={"host": "127.0.0.1", "port": free_port(), "timeout": 1.0})
    with pytest.raises(SendingStopped, match="cannot connect"):  # no connection at all
        run_send(dead, engine, DAY)
    with session_scope(engine) as s:  # nobody's delivery was spent on it
        assert set(s.scalars(select(Delivery.status))) == {"pending"}
    assert smtp_sink.messages == []
    # The server is back: the same command finishes the edition, nobody twice.
    summary = run_send(smtp_settings(settings, smtp_sink), engine, DAY)
    assert summary.report.counts["sent"] == len(ACTIVE)
    assert sorted(r for r, _ in smtp_sink.messages) == sorted(ACTIVE)


@pytest.mark.slow  # ~2 s: two sends
def test_unsubscribed_before_delivery_is_skipped_with_reason(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    from .editions_support import plan_edition

    plan = plan_edition(settings, engine, DAY).plan  # planned now, delivered below
    assert plan.planned + plan.skipped == len(ACTIVE)
    with session_scope(engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "alan@example.org"))
        assert sub is not None
        sub.status = "unsubscribed"
    run_send(smtp_settings(settings, smtp_sink), engine, DAY)
    assert smtp_sink.count("alan@example.org") == 0
    with session_scope(engine) as s:
        row = s.scalar(select(Delivery).join(Subscriber).where(
            Subscriber.email == "alan@example.org"))
        assert row is not None and row.status == "skipped" and "unsubscribed" in row.reason


@pytest.mark.slow  # ~6 s: a `newsletter send` process, killed, and a rerun
def test_kill_9_mid_edition_then_resume(world, smtp_sink: SmtpSink, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A real `newsletter send` process is killed with SIGKILL while the server is taking
    a message; `send` again: every active subscriber has exactly one copy."""
    settings, engine = world
    from newsletter.store import subscribers

    with session_scope(engine) as s:
        for i in range(30):
            subscribers.add(s, f"k{i}@example.org", keywords="residual")
    smtp_sink.delay = 0.4  # each message sits 0.4 s in the server before it is accepted
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
           "NEWSLETTER_DATABASE__URL": settings.database.url,
           "NEWSLETTER_TRANSPORT__BACKEND": "smtp",
           "NEWSLETTER_SMTP__HOST": "127.0.0.1", "NEWSLETTER_SMTP__PORT": str(smtp_sink.port),
           "NEWSLETTER_SMTP__CONNECTIONS": "1"}
    cmd = [sys.executable, "-m", "newsletter", "send", "--date", DAY.isoformat(), "--yes",
           "--force"]  # a local test sink: demo defaults on purpose
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(smtp_sink.messages) < 12 and time.monotonic() < deadline:
        time.sleep(0.005)
    # Past the ledger's flush of message 12 (it records within 50 ms), and well inside
    # the server's delay for message 13, which then never gets accepted.
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got_before = len(smtp_sink.messages)
    assert 12 <= got_before < 38
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.status == "sending")) >= 1  # the dead process held leases
    # `status` names the holder and says it is gone (the counts alone said "sending")
    status = subprocess.run([sys.executable, "-m", "newsletter", "status", DAY.isoformat()],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    held = [line for line in status.stdout.splitlines() if "held by" in line]
    assert len(held) == 1 and f":{proc.pid}, which is gone" in held[0], status.stdout
    assert f"newsletter send --date {DAY.isoformat()}" in held[0]
    as_json = json.loads(subprocess.run(
        [sys.executable, "-m", "newsletter", "status", "--json", DAY.isoformat()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60).stdout)
    assert [h["gone"] for h in as_json["sending"]] == [True]
    assert as_json["sending"][0]["rows"] == as_json["counts"]["sending"]
    smtp_sink.delay = 0
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "took back" in result.stderr
    everyone = ACTIVE + [f"k{i}@example.org" for i in range(30)]
    assert sorted(r for r, _ in smtp_sink.messages) == sorted(everyone)


def test_preview_writes_files_and_leaves_the_database_untouched(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    db_file = Path(settings.database.url.removeprefix("sqlite:///"))
    engine.dispose()
    before = hashlib.sha256(db_file.read_bytes()).hexdigest()
    out = tmp_path / "preview"
    report = run_preview(settings, engine, DAY, out)
    engine.dispose()
    assert hashlib.sha256(db_file.read_bytes()).hexdigest() == before
    summary = report.summary()
    assert summary["subscribers"] == len(ACTIVE)
    assert summary["empty_profiles"] == 1
    assert summary["papers_per_email"]["max"] == 10
    for address in ACTIVE:
        for ext in (".html", ".txt", ".eml"):
            assert (out / f"{address}{ext}").is_file(), address + ext
    assert not list(Path(settings.outbox.path).glob("*")) if Path(
        settings.outbox.path).exists() else True
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0


def test_each_previewed_address_has_files_of_its_own(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Addresses whose unsafe characters made the same file name (``x/y@`` and ``x#y@``)
    get one preview each, and a long address (254 characters, valid) one the file system
    takes: one preview overwrote the other, and the long one stopped the preview."""
    settings, engine = world
    long = "a" * 64 + "@" + ".".join(["b" * 60, "c" * 60, "d" * 55]) + ".example.org"
    assert len(long) == 254
    odd = ["x/y@example.org", "x#y@example.org", long]
    with session_scope(engine) as s:
        for address in odd:
            s.add(Subscriber(email=address, keywords="diffusion", tz="UTC", send_hour=7,
                             status="active"))
    out = tmp_path / "preview"
    report = run_preview(settings, engine, DAY, out)
    assert report.summary()["subscribers"] == len(ACTIVE) + len(odd)
    emls = sorted(out.glob("*.eml"))
    assert len(emls) == len(ACTIVE) + len(odd)
    to = {email.message_from_bytes(p.read_bytes())["To"] for p in emls}
    assert all(any(a in t for t in to) for a in odd), to
    for p in emls:  # each .eml has its .html and .txt beside it
        assert p.with_suffix(".html").is_file() and p.with_suffix(".txt").is_file()
    assert (out / "ada@example.org.eml").is_file()  # a safe address stays its own name


def test_rate_window() -> None:
    now = [100.0]
    window = Window.of(10.0, 1.0, lambda: now[0])  # 10 a second
    for _ in range(10):
        assert window.wait_time() == 0.0
        window.take()
    assert window.wait_time() == pytest.approx(1.0)  # the 11th waits for the first's second
    now[0] += 0.4
    assert window.wait_time() == pytest.approx(0.6)
    now[0] += 0.6
    assert window.wait_time() == 0.0
    hourly = Window.of(60 / 3600, 3600.0, lambda: now[0])  # below one an hour's worth
    hourly.take()
    assert hourly.wait_time() == pytest.approx(3600 * 3600 / 60)


@pytest.mark.parametrize("per_second, per_hour", [(5, 0), (0, 3600), (5, 3600)])
def test_a_rate_limit_holds_in_every_window_from_the_first_message(per_second: float,
                                                                   per_hour: float) -> None:
    """`rate_per_second = 5`: at most 5 messages in any second, the first one included
    (a full bucket let 5 go at once and 5 more within that second: 10); the same for
    an hour's limit, over its minutes."""
    from newsletter.delivery.ratelimit import RateLimiter

    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def run() -> list[float]:
        limiter = RateLimiter(per_second, per_hour, clock=lambda: now[0], sleep=sleep)
        times = []
        for _ in range(40):
            await limiter.acquire()
            times.append(now[0])
        return times

    times = asyncio.run(run())
    for limit, window in ((per_second, 1.0), (per_hour, 3600.0)):
        if limit:
            most = max(sum(1 for t in times if start <= t < start + window - 1e-9)
                       for start in times)
            assert most <= limit, (limit, most)


def test_a_rate_limit_is_reached_when_wake_ups_come_late() -> None:
    """Each wake-up a little late (a loop busy rendering): the rate is still reached,
    where a one-token bucket lost every late wake-up (69% of 300 a second)."""
    from newsletter.delivery.ratelimit import RateLimiter

    now = [0.0]

    async def late(seconds: float) -> None:
        now[0] += seconds + 0.002

    async def run() -> int:
        limiter = RateLimiter(300, 0, clock=lambda: now[0], sleep=late)
        sent = 0
        while now[0] < 10.0:
            await limiter.acquire()
            sent += 1
            now[0] += 0.0005  # the work between two sends
        return sent

    sent = asyncio.run(run())
    assert sent >= 0.97 * 300 * 10, sent


def test_fractional_and_shared_rates_are_reached_and_kept() -> None:
    """2.5 a second is 2.5 on average (rounded down it was 2), with at most 3 in any
    second; a limit above what a window can count is no limit (inf raised)."""
    from newsletter.delivery.ratelimit import RateLimiter

    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def run(rate: float) -> list[float]:
        limiter = RateLimiter(rate, 0, clock=lambda: now[0], sleep=sleep)
        times: list[float] = []
        while now[0] < 20.0:
            await limiter.acquire()
            times.append(now[0])
        return times

    for rate in (2.5, 1.5, 5 / 3, 0.5):
        now[0] = 0.0
        times = asyncio.run(run(rate))
        reached = (len(times) - 1) / (times[-1] - times[0])
        assert abs(reached - rate) <= 0.05 * rate, (rate, reached)
        most = max(sum(1 for t in times if start <= t < start + 1 - 1e-9) for start in times)
        assert most <= math.ceil(rate), (rate, most)
    assert RateLimiter(float("inf"), 1e30).unlimited


def test_an_hourly_limit_counts_what_earlier_runs_sent(world) -> None:  # type: ignore[no-untyped-def]
    """Each run (a slot, the retry job ten minutes later, a rerun) had a fresh hour:
    300 messages went in 30 minutes under a limit of 100 an hour. The ledger says
    what went in the last hour, and the next run's hour counts it."""
    from newsletter.delivery.ledger import DbLedger
    from newsletter.delivery.ratelimit import RateLimiter

    settings, engine = world
    summary = run_send(settings, engine, DAY)
    sent = summary.report.counts["sent"]
    assert sent > 0
    ages = DbLedger(engine, summary.edition).sent_last_hour(1000)
    assert len(ages) == sent and all(0 <= a < 600 for a in ages)
    now = [1000.0]
    limiter = RateLimiter(0, sent, clock=lambda: now[0], sent_last_hour=ages)
    [hour] = limiter.windows
    assert hour.wait_time() >= 3600 - max(ages) - 1  # that hour's quota is spent
    assert RateLimiter(0, sent + 1, sent_last_hour=ages).windows[0].wait_time() == 0


@pytest.mark.slow  # ~2 s: two sends
def test_an_unexpected_transport_error_fails_one_row_not_the_run(world) -> None:  # type: ignore[no-untyped-def]
    from newsletter.render.mime import Message
    from newsletter.transports.base import Transport

    class Broken(Transport):
        """A transport with a bug for one address."""

        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, message: Message) -> str:
            if message.to == "edsger@example.org":
                raise RuntimeError("unexpected")
            self.sent.append(message.to)
            return message.message_id

    settings, engine = world
    broken = Broken()
    summary = run_send(settings.replace(transport={"max_attempts": 2}), engine, DAY,
                       transport=broken)
    assert summary.report.counts == {"sent": len(ACTIVE) - 1, "failed": 1}
    assert "RuntimeError: unexpected" in summary.report.errors[0]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.status.in_(["pending", "sending"]))) == 0
    # a rerun retries the transient failure
    summary = run_send(settings, engine, DAY, transport=Broken())
    assert summary.reclaimed == 1 and summary.report.counts == {"failed": 1}


def test_retry_answers_at_once_and_sends_in_the_background(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """The console's retry: the deferred row is requeued (now, though its next try is
    minutes away) and the call returns; the same delivery a worker runs sends it from
    a background thread, once."""
    import threading

    from newsletter.delivery.edition import EditionConfig
    from newsletter.service.editions import Background, retry_failed
    from newsletter.transports import make_transport

    settings, engine = world
    settings = smtp_settings(settings, smtp_sink, max_attempts=1)
    smtp_sink.faults["ada@example.org"] = ["451 4.7.1 greylisted"]
    summary = run_send(settings, engine, DAY)
    assert summary.report.counts == {"sent": len(ACTIVE) - 1, "deferred": 1}
    release = threading.Event()
    made: list[str] = []

    def transport():  # type: ignore[no-untyped-def]
        made.append(threading.current_thread().name)
        return make_transport(settings)

    background = Background()
    start = background.start  # the delivery waits for ``release``: the call returned first
    background.start = lambda eid, work: start(  # type: ignore[method-assign]
        eid, lambda: (release.wait(10), work()))
    queued = retry_failed(EditionConfig.of(settings), engine, summary.edition.id,
                          transport, background, force=True)  # (documentation names)
    assert queued == 1 and smtp_sink.count("ada@example.org") == 0  # answered, not sent yet
    with session_scope(engine) as s:
        row = s.scalar(select(Delivery).join(Subscriber).where(
            Subscriber.email == "ada@example.org"))
        assert row is not None and row.status == "pending"
    assert not background.start(summary.edition.id, lambda: None)  # one per edition
    release.set()
    background.join(30)
    assert smtp_sink.count("ada@example.org") == 1
    with session_scope(engine) as s:
        assert set(s.scalars(select(Delivery.status))) == {"sent"}
    assert retry_failed(EditionConfig.of(settings), engine, summary.edition.id,
                        transport, background, force=True) == 0 and made == ["MainThread"]
