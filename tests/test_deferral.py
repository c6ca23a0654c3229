"""Deferred, not failed: a message refused for now is tried again later, with a
doubling wait, until ``[delivery] retry_hours`` after its first try; then failed with
the last reason. Against aiosmtpd answering 451 for chosen recipients, with a clock
the test sets (``now``), so hours pass without waiting."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter.app import App
from newsletter.config import DeliveryConfig, Settings
from newsletter.delivery.deferral import next_try
from newsletter.delivery.scheduler import retry_deferred, send_slot
from newsletter.service.editions import requeue_failed, status
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Delivery, Subscriber
from newsletter.store.subscribers import add

from .conftest import ROOT, SmtpSink
from .editions_support import run_send

DAY = dt.date(2025, 12, 26)
T0 = dt.datetime(2025, 12, 26, 7, 0)  # naive UTC, as the ledger stores times
GREY = "451 4.7.1 greylisted, try again later"


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def test_the_wait_doubles_and_ends_at_the_deadline() -> None:
    cfg = DeliveryConfig(retry_first_minutes=5, retry_hours=1)
    assert next_try(cfg, T0, 1, T0) == minutes(5)
    assert next_try(cfg, T0, 2, minutes(5)) == minutes(15)
    assert next_try(cfg, T0, 3, minutes(15)) == minutes(35)
    assert next_try(cfg, T0, 4, minutes(35)) == minutes(60)  # 40 min cut at the deadline
    assert next_try(cfg, T0, 5, minutes(60)) is None  # over: failed
    assert next_try(cfg, T0, 60, minutes(59)) == minutes(60)  # no overflow, still the end


def smtp(settings: Settings, sink: SmtpSink, **delivery: object) -> Settings:
    return settings.replace(
        transport={"backend": "smtp", "max_attempts": 1, "backoff_seconds": 0.01},
        smtp={"host": sink.host, "port": sink.port, "connections": 2, "timeout": 2.0},
        delivery={"retry_first_minutes": 5, "retry_hours": 1, **delivery})


def deliver_once(settings: Settings, ledger: Any, context: Any,
                 beside: Callable[[threading.Event], None] | None = None) -> Any:
    """One delivery loop over ``ledger`` (its report), with ``beside`` running in a
    thread meanwhile, told to end by the event once the loop has returned."""
    from newsletter.delivery.deliver import deliver, run_async
    from newsletter.transports import make_transport

    done = threading.Event()
    thread = threading.Thread(target=beside, args=(done,)) if beside else None
    if thread:
        thread.start()
    try:
        return run_async(deliver(settings.transport, ledger, context,
                                 make_transport(settings)))
    finally:
        done.set()
        if thread:
            thread.join()


def slowly_answered(settings: Settings, engine: Any, sink: SmtpSink, seconds: float
                    ) -> tuple[Settings, Any]:
    """The day's edition planned, to go out one message at a time to a sink that
    answers each message's end ``seconds`` late: the settings and the plan."""
    from .editions_support import plan_edition

    sink.answer_after = seconds
    settings = smtp(settings, sink).replace(
        transport={"concurrency": 1}, smtp={"connections": 1, "data_timeout": 5.0})
    planned = plan_edition(settings, engine, DAY)
    assert planned.edition is not None and planned.context is not None
    return settings, planned


def pending(engine: Any, edition_id: int) -> int:
    """How many of the edition's rows are still pending (no worker holds them)."""
    with session_scope(engine, readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition_id, Delivery.status == "pending")) or 0)


def once_each(sink: SmtpSink, n: int) -> bool:
    """Whether the sink holds ``n`` messages, one for each recipient."""
    return len(sink.messages) == n and {sink.count(r) for r, _ in sink.messages} == {1}


def row(engine: Any, email: str) -> Delivery:
    with session_scope(engine) as s:
        found = s.scalar(select(Delivery).join(Subscriber).where(Subscriber.email == email))
        assert found is not None
        s.expunge(found)
        return found


def test_deferred_rows_are_retried_when_due_then_failed_after_retry_hours(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    settings = smtp(settings, smtp_sink)
    smtp_sink.faults["ada@example.org"] = [GREY] * 20  # refused for the whole hour
    smtp_sink.faults["grace@example.org"] = [GREY]  # refused once, accepted after
    first = run_send(settings, engine, DAY, now=T0)
    assert first.report.counts == {"sent": 6, "deferred": 2}, first.report.errors
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.first_try_at, ada.next_try_at) == ("deferred", T0, minutes(5))
    assert "451" in ada.last_error

    # status: the deferred rows with their next try
    shown = status(engine)
    assert shown["counts"]["deferred"] == 2 and shown["counts"]["failed"] == 0
    assert {d["email"]: d["next_try"] for d in shown["deferred"]} == {
        "ada@example.org": "2025-12-26T07:05:00+00:00",
        "grace@example.org": "2025-12-26T07:05:00+00:00"}

    # not due yet: nothing is tried
    early = run_send(settings, engine, DAY, now=minutes(4))
    assert early.due == 0 and not early.report.counts
    assert row(engine, "ada@example.org").attempts == 1

    # due: grace goes out, once; ada is refused again and waits twice as long
    due = run_send(settings, engine, DAY, now=minutes(5))
    assert due.due == 2 and due.report.counts == {"sent": 1, "deferred": 1}
    assert smtp_sink.count("grace@example.org") == 1
    assert row(engine, "grace@example.org").status == "sent"
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.attempts, ada.first_try_at, ada.next_try_at) == (
        "deferred", 2, T0, minutes(15))

    for at, then in ((15, 35), (35, 60)):  # 5, 10, 20, then cut at the hour
        run_send(settings, engine, DAY, now=minutes(at))
        assert row(engine, "ada@example.org").next_try_at == minutes(then)

    # retry_hours after the first try: the next refusal fails it, with the last reason
    last = run_send(settings, engine, DAY, now=minutes(60))
    assert last.report.counts == {"failed": 1}
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.reason, ada.next_try_at) == ("failed", "expired", minutes(60))
    assert "451" in ada.last_error and "retry_hours" in ada.last_error
    # a failed row is not tried again by a later send; nobody got two copies
    run_send(settings, engine, DAY, now=minutes(600))
    assert row(engine, "ada@example.org").attempts == 5
    assert smtp_sink.count("ada@example.org") == 0
    assert all(smtp_sink.count(r) == 1 for r, _ in smtp_sink.messages)

    # the operator's retry (the console's button) puts it back, with a window of its
    # own: refused for now once more, it waits for its next try (its old window was
    # over, and it failed again at once), then goes out once
    smtp_sink.faults["ada@example.org"] = [GREY]
    edition_id = row(engine, "ada@example.org").edition_id
    assert requeue_failed(engine, edition_id) == 1
    assert row(engine, "ada@example.org").status == "pending"
    run_send(settings, engine, DAY, now=minutes(601))
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.first_try_at) == ("deferred", minutes(601)), ada.last_error
    run_send(settings, engine, DAY, now=ada.next_try_at)
    assert row(engine, "ada@example.org").status == "sent"
    assert smtp_sink.count("ada@example.org") == 1


def _requeued(settings: Settings, engine: Any, smtp_sink: SmtpSink) -> Any:
    """Ada deferred at T0 (next try at 07:05), then put back in the queue at 07:05 by
    a run that is about to be stopped: her edition's ledger."""
    from newsletter.delivery.ledger import DbLedger
    from newsletter.store.models import Edition

    smtp_sink.faults["ada@example.org"] = [GREY]
    assert run_send(settings, engine, DAY, now=T0).report.counts["deferred"] == 1
    with session_scope(engine) as s:
        edition = s.scalar(select(Edition).where(Edition.day == DAY))
        assert edition is not None
        s.expunge(edition)
    ledger = DbLedger(engine, edition)
    assert ledger.requeue_due(minutes(5)) == 1
    assert row(engine, "ada@example.org").status == "pending"
    return ledger


def test_a_due_row_a_stopped_run_claimed_goes_back_deferred_and_is_sent_next(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A run puts the deferred rows due back in the queue, claims them, and is stopped
    before sending (a signal, a fault of the sending side): it gives them back, and
    defers again those it put back and has not sent (``unrequeue``), due, so the next
    run sends them at once, once each. Left pending, they were due to no one and a
    `send` right after sent nothing."""
    from newsletter.delivery.ledger import Outcome, OutcomeStatus

    settings, engine = world
    settings = smtp(settings, smtp_sink)
    ledger = _requeued(settings, engine, smtp_sink)
    [job] = ledger.claim(10)
    ledger.record([Outcome(job, OutcomeStatus.RELEASED)])  # stopped before sending it
    ada = row(engine, "ada@example.org")  # back in the queue (a lapse re-claims it)
    assert ada.status == "pending" and ada.lease_owner.startswith("requeued:")
    assert ledger.unrequeue() == 1  # what the stopped run does last
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.next_try_at, ada.attempts) == ("deferred", minutes(5), 1)
    done = retry_deferred(App(settings, engine), now=minutes(5))
    assert done.due == 1 and done.report.counts == {"sent": 1}, done.report.errors
    assert row(engine, "ada@example.org").status == "sent"
    assert smtp_sink.count("ada@example.org") == 1
    assert retry_deferred(App(settings, engine), now=minutes(30)).due == 0


def test_a_due_row_a_stopped_run_never_claimed_is_taken_up_once_left_alone(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Put back in the queue and never claimed (the run stopped before it got there),
    the row is due as it was: taken up once nothing has touched it for ``LEFT_AFTER``
    (a run that has just put it back, as `send --queue` does before its workers start,
    keeps it), not while a live run delivers its edition, and not once its try was due
    more than ``retry_hours`` ago. It waited before for the interrupted-run rule, which
    leaves rows planned over ``retry_hours`` ago: for good."""
    from sqlalchemy import update

    from newsletter.service.editions import LEFT_AFTER
    from newsletter.store.models import DeliveryStatus

    settings, engine = world
    settings = smtp(settings, smtp_sink)  # retry_hours = 1
    _requeued(settings, engine, smtp_sink)  # (and the run killed: never deferred again)
    with session_scope(engine) as s:  # requeued at 07:05, the edition planned at T0
        s.execute(update(Delivery).values(updated_at=minutes(5), created_at=T0))
    app = App(settings, engine)
    assert retry_deferred(app, now=minutes(6)).due == 0  # just put back: that run's
    with session_scope(engine) as s:  # a live run holds a row of the edition
        s.execute(update(Delivery).where(Delivery.subscriber_id.in_(
            select(Subscriber.id).where(Subscriber.email == "grace@example.org"))).values(
            status=DeliveryStatus.SENDING, lease_owner="elsewhere:1:1",
            lease_expires=minutes(24 * 60 * 10)))
    later = minutes(5) + LEFT_AFTER + dt.timedelta(minutes=1)
    assert retry_deferred(app, now=later).due == 0 and smtp_sink.count("ada@example.org") == 0
    with session_scope(engine) as s:  # that run ended
        s.execute(update(Delivery).where(Delivery.status == DeliveryStatus.SENDING)
                  .values(status=DeliveryStatus.SENT, lease_owner="", lease_expires=None))
    # left longer than retry_hours after its try was due: not sent out of the blue
    assert retry_deferred(app, now=minutes(5) + dt.timedelta(hours=1)).due == 0
    done = retry_deferred(app, now=later)
    assert done.due == 1 and done.report.counts == {"sent": 1}, done.report.errors
    assert smtp_sink.count("ada@example.org") == 1
    assert row(engine, "ada@example.org").status == "sent"


def test_a_stopped_run_defers_again_its_own_rows_not_another_live_runs(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Two runs of one edition: the one that stops defers again the rows it put back,
    not those the other, still running, put back and is about to claim (it then sent
    nothing and said nothing); a process of a run defers its run's rows. And a killed
    run's row is taken up however long its try had been due when it was put back."""
    from sqlalchemy import update

    from newsletter.delivery.ledger import DbLedger, Outcome, OutcomeStatus
    from newsletter.service.editions import LEFT_AFTER

    settings, engine = world
    settings = smtp(settings, smtp_sink)  # retry_hours = 1
    other = _requeued(settings, engine, smtp_sink)  # the live run put ada back
    stopped = DbLedger(engine, other.edition)
    assert stopped.unrequeue() == 0 and row(engine, "ada@example.org").status == "pending"
    child = DbLedger(engine, other.edition, run=other.run)  # a process of the live run
    [job] = child.claim(10)
    assert job.recipient.email == "ada@example.org"
    child.record([Outcome(job, OutcomeStatus.RELEASED)])
    assert other.unrequeue() == 1 and row(engine, "ada@example.org").status == "deferred"
    # put back again by a run killed since, its try due for far longer than retry_hours
    assert other.requeue_due(minutes(5)) == 1
    late = minutes(5) + dt.timedelta(hours=30)
    with session_scope(engine) as s:
        s.execute(update(Delivery).values(updated_at=late - 2 * LEFT_AFTER, created_at=T0))
    done = retry_deferred(App(settings, engine), now=late)
    assert done.due == 1 and done.report.counts == {"sent": 1}, done.report.errors
    assert smtp_sink.count("ada@example.org") == 1


def test_due_rows_a_run_put_back_are_deferred_again_when_the_sender_fails(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """The day after, a `send` puts the deferred row due back in the queue, then cannot
    reach the server (a fault of the sending side: it stops, promising that `send` sends
    what is left once fixed). The row is deferred again, due, not left pending, and the
    next send, the server back, sends it at once."""
    import socket

    from newsletter.errors import SendingStopped

    settings, engine = world
    settings = smtp(settings, smtp_sink)
    smtp_sink.faults["ada@example.org"] = [GREY]
    assert run_send(settings, engine, DAY, now=T0).report.counts["deferred"] == 1
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead = free.getsockname()[1]
    down = settings.replace(smtp={"port": dead})
    nextday = DAY + dt.timedelta(days=1)
    with pytest.raises(SendingStopped):
        run_send(down, engine, nextday, now=minutes(5))
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.lease_owner) == ("deferred", ""), ada.status
    again = run_send(settings, engine, nextday, now=minutes(5))
    assert again.due == 1 and again.report.counts["sent"] == 1, again.report.errors
    assert smtp_sink.count("ada@example.org") == 1


def test_a_send_with_only_due_rows_to_retry_says_their_failures_and_exits_3(
        world, smtp_sink: SmtpSink, cli) -> None:  # type: ignore[no-untyped-def]
    """The day after, no new papers: `send` plans nothing and sends the deferred rows
    due. One refused for good is a failure like any other: said, and exit code 3
    (it was exit code 0 with only "retried 1 deferred delivery" said)."""
    settings, engine = world
    settings = smtp(settings, smtp_sink)
    smtp_sink.faults["ada@example.org"] = [GREY]
    assert run_send(settings, engine, DAY, now=T0).report.counts["deferred"] == 1
    smtp_sink.faults["ada@example.org"] = ["550 5.1.1 no such user"]
    env = {"NEWSLETTER_DATABASE__URL": str(engine.url),
           "NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_TRANSPORT__MAX_ATTEMPTS": "1",
           "NEWSLETTER_SMTP__HOST": smtp_sink.host, "NEWSLETTER_SMTP__PORT": str(smtp_sink.port)}
    later = cli("send", "--date", "2025-12-27", "--yes", "--force", env=env)
    assert later.code == 3, later.stderr
    assert "no new papers" in later.stderr, later.stderr
    assert "sent 0, failed 1" in later.stderr and "failed: ada@example.org" in later.stderr
    assert "retried 1 deferred delivery whose next try was due" in later.stderr
    assert row(engine, "ada@example.org").status == "failed"
    assert smtp_sink.count("ada@example.org") == 0


def populate_slots(engine: Any) -> None:
    with session_scope(engine) as s:
        for email, hour in (("early@example.org", 7), ("later@example.org", 8)):
            add(s, email, keywords="attention, diffusion", tz="UTC", hour=hour)


def test_a_later_slot_retries_the_deferred_row_instead_of_planning_another(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """Slot 07 defers a 07:00 subscriber; slot 08 (their hour has passed, they have a
    row for the day) sends that row again: one row, one copy. Between slots, the
    daemon's deferred job sends what is due."""
    settings, engine = world
    populate_slots(engine)
    settings = smtp(settings, smtp_sink)
    app = App(settings, engine)
    smtp_sink.faults["early@example.org"] = [GREY]
    smtp_sink.faults["later@example.org"] = [GREY]
    seven = send_slot(app, dt.datetime(2025, 12, 26, 7, tzinfo=dt.UTC))
    assert seven.report.counts["deferred"] >= 1
    assert row(engine, "early@example.org").status == "deferred"
    assert smtp_sink.count("early@example.org") == 0

    eight = send_slot(app, dt.datetime(2025, 12, 26, 8, tzinfo=dt.UTC))
    assert eight.due >= 1  # the 07:00 deferral was due by 08:00: retried
    assert row(engine, "early@example.org").status == "sent"
    assert smtp_sink.count("early@example.org") == 1
    later = row(engine, "later@example.org")  # planned at 08, refused for now
    assert later.status == "deferred" and later.next_try_at == dt.datetime(2025, 12, 26, 8, 5)

    assert retry_deferred(app, now=dt.datetime(2025, 12, 26, 8, 4, tzinfo=dt.UTC)).due == 0
    done = retry_deferred(app, now=dt.datetime(2025, 12, 26, 8, 5, tzinfo=dt.UTC))
    assert done.due == 1 and done.report.counts == {"sent": 1}
    assert smtp_sink.count("later@example.org") == 1
    for hour in range(9, 24):  # every later slot: nobody planned twice, nobody sent twice
        send_slot(app, dt.datetime(2025, 12, 26, hour, tzinfo=dt.UTC))
    with session_scope(engine) as s:
        per = s.execute(select(Delivery.subscriber_id, func.count())
                        .where(Delivery.day == DAY).group_by(Delivery.subscriber_id)).all()
    assert {n for _, n in per} == {1}
    with session_scope(engine) as s:
        sent = dict(s.execute(select(Subscriber.email, func.count()).join(Delivery)
                              .where(Delivery.status == "sent")
                              .group_by(Subscriber.email)).all())
    assert {r: smtp_sink.count(r) for r, _ in smtp_sink.messages} == sent  # one per row


def test_an_edition_whose_messages_are_all_refused_for_content_holds_up_no_other(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """The retry job takes up the due rows edition by edition. One edition's messages,
    every one refused for its content with none of the edition ever accepted, stop
    that edition (its rows due again, said in the report), and the next edition's due
    row is still sent: stopped there, the job left it due at every try until it
    expired."""
    settings, engine = world
    populate_slots(engine)
    app = App(smtp(settings, smtp_sink, retry_hours=24), engine)
    seven, deferred_seven, due = deferred_in_slots_seven_and_eight(app, smtp_sink)
    assert seven.report.counts.get("sent", 0) == 0 and seven.report.counts["deferred"] >= 1
    assert row(engine, "later@example.org").status == "deferred"
    assert "early@example.org" in deferred_seven
    for email in deferred_seven:  # a filter refusing what slot 07's readers are sent
        smtp_sink.data_faults[email] = ["554 5.7.1 message content rejected"] * 10
    done = retry_deferred(app, now=due)
    assert row(engine, "later@example.org").status == "sent"
    assert smtp_sink.count("later@example.org") == 1
    # not failed: due again (deferred, as a stopped run leaves the due rows it took up)
    assert {row(engine, e).status for e in deferred_seven} == {"deferred"}
    assert any(e.startswith(f"edition {seven.edition.id}: SMTP 554 5.7.1")
               and "none of the run's messages accepted" in e
               for e in done.report.errors), done.report.errors
    assert not any(smtp_sink.count(e) for e in deferred_seven)


def refused_in_two_slots(world: Any, smtp_sink: SmtpSink) -> tuple[App, list[str], dt.datetime]:
    """More than ``ERRORS_KEPT`` readers of slot 07 deferred, then refused for good, and
    slot 08's one reader deferred, then refused for its content (none of that edition
    accepted: it stops): the app, slot 07's readers and when all are due."""
    from newsletter.delivery.deliver import ERRORS_KEPT

    settings, engine = world
    populate_slots(engine)
    with session_scope(engine) as s:
        for n in range(ERRORS_KEPT + 2):
            add(s, f"early{n}@example.org", keywords="attention, diffusion", tz="UTC",
                hour=7)
    app = App(smtp(settings, smtp_sink, retry_hours=24), engine)
    _, deferred_seven, due = deferred_in_slots_seven_and_eight(app, smtp_sink)
    assert len(deferred_seven) > ERRORS_KEPT
    for email in deferred_seven:
        smtp_sink.faults[email] = ["550 5.1.1 no such user"]
    smtp_sink.data_faults["later@example.org"] = ["554 5.7.1 message content rejected"] * 10
    return app, deferred_seven, due


def deferred_in_slots_seven_and_eight(app: App, smtp_sink: SmtpSink
                                      ) -> tuple[Any, list[str], dt.datetime]:
    """Slot 07 sends nothing: each of its readers refused for now (and again when slot
    08 retries them); slot 08's own reader refused for now once. Slot 07's send, the
    readers it left deferred, and when every deferred row is due."""
    with session_scope(app.engine) as s:
        everyone = list(s.scalars(select(Subscriber.email)))
    for email in everyone:
        smtp_sink.faults[email] = [GREY, GREY]
    seven = send_slot(app, dt.datetime(2025, 12, 26, 7, tzinfo=dt.UTC))
    smtp_sink.faults["later@example.org"] = [GREY]
    send_slot(app, dt.datetime(2025, 12, 26, 8, tzinfo=dt.UTC))
    with session_scope(app.engine) as s:
        deferred_seven = list(s.scalars(
            select(Subscriber.email).join(Delivery)
            .where(Delivery.status == "deferred", Delivery.edition_id == seven.edition.id)))
        due = s.scalar(select(func.max(Delivery.next_try_at))
                       .where(Delivery.status == "deferred"))
    assert due is not None
    return seven, deferred_seven, due.replace(tzinfo=dt.UTC)


def test_a_retry_over_several_editions_keeps_as_many_error_lines_as_one_delivery(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A report keeps its first ``ERRORS_KEPT`` readers' error lines and counts the
    rest, however it gains them (the report of a job over many editions grew a line
    for each failed reader); the line of an edition stopped for its size or content
    refusals is the run's own, kept first whatever came before it: behind twenty
    readers' failures it was counted and said nowhere."""
    from newsletter.delivery.deliver import ERRORS_KEPT

    app, deferred_seven, due = refused_in_two_slots(world, smtp_sink)
    done = retry_deferred(app, now=due)
    assert done.report.counts["failed"] == len(deferred_seven)
    assert len(done.report.errors) == ERRORS_KEPT + 1, done.report.errors
    assert done.report.errors[0].startswith("edition ") and \
        "none of the run's messages accepted" in done.report.errors[0], done.report.errors
    assert done.report.errors_left_out == len(deferred_seven) - ERRORS_KEPT
    assert row(app.engine, "later@example.org").status == "deferred"  # stopped, due again


def test_a_send_says_how_many_error_lines_it_left_out(
        world, smtp_sink: SmtpSink, cli) -> None:  # type: ignore[no-untyped-def]
    """`send` prints the first ``ERRORS_KEPT`` failures and how many more there were:
    past the cap the rest went unsaid, an edition's stop for its content refusals
    (its rows pending, waiting for the fix) among them. (Slot 07's send again: its own
    edition's due rows, then slot 08's.)"""
    from newsletter.delivery.deliver import ERRORS_KEPT

    app, deferred_seven, _ = refused_in_two_slots(world, smtp_sink)
    env = {"NEWSLETTER_DATABASE__URL": str(app.engine.url),
           "NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_TRANSPORT__MAX_ATTEMPTS": "1",
           "NEWSLETTER_SMTP__HOST": smtp_sink.host, "NEWSLETTER_SMTP__PORT": str(smtp_sink.port)}
    later = cli("send", "--date", "2025-12-26", "--slot", "07", "--yes", "--force", env=env)
    assert later.code == 3, later.stderr
    lines = later.stderr.splitlines()
    assert sum(1 for line in lines if line.startswith("  failed: ")) == ERRORS_KEPT + 1, lines
    assert any(line.startswith("  failed: edition ") for line in lines), lines
    more = len(deferred_seven) - ERRORS_KEPT
    assert f"  and {more} more not shown (`newsletter status EDITION`" in later.stderr, lines


def test_the_runs_own_error_lines_are_kept_past_the_readers_cap() -> None:
    """A delivery process that died, an edition that stopped: lines of the run itself,
    kept and listed first however many readers' lines came before them or are merged
    in (children's reports are added after the parent's own), while readers' lines
    stay capped at ``ERRORS_KEPT``."""
    from newsletter.delivery.deliver import ERRORS_KEPT, DeliverReport

    child = DeliverReport()
    for n in range(ERRORS_KEPT + 3):
        child.error(f"reader {n}")
    child.error("edition 7: stopped", run=True)
    parent = DeliverReport()
    parent.error("reader x")
    parent.add(child)
    parent.error("delivery process 42: killed", run=True)
    assert parent.errors[:2] == ["edition 7: stopped", "delivery process 42: killed"]
    assert parent.errors[2:] == ["reader x", *(f"reader {n}" for n in range(ERRORS_KEPT - 1))]
    assert parent.errors_left_out == (1 + ERRORS_KEPT + 3) - ERRORS_KEPT  # of 24 readers
    assert parent.run_lines == 2


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_deferred_row_claimed_by_two_runs_is_sent_once(
        world, smtp_sink: SmtpSink, concurrency: int) -> None:  # type: ignore[no-untyped-def]
    """Two deliveries of the same due rows at once (a slot and the deferred job):
    the lease decides; each row goes out once."""
    import threading

    settings, engine = world
    settings = smtp(settings, smtp_sink).replace(transport={"concurrency": concurrency})
    for r in ("ada@example.org", "grace@example.org", "alan@example.org"):
        smtp_sink.faults[r] = [GREY]
    run_send(settings, engine, DAY, now=T0)
    app = App(settings, engine)
    threads = [threading.Thread(target=retry_deferred, args=(app, minutes(6)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in ("ada@example.org", "grace@example.org", "alan@example.org"):
        assert smtp_sink.count(r) == 1, r
        assert row(engine, r).status == "sent"


def test_deferral_on_both_databases(db_url: str, smtp_sink: SmtpSink) -> None:
    """The deferred row's write, its requeue when due and the sent write that clears
    its next try, on SQLite and on PostgreSQL (whose sent rows take their own path)."""
    from .test_delivery_day import populate

    people = [("ada@example.org", "UTC", 7), ("grace@example.org", "UTC", 7)]
    settings = smtp(populate(db_url, people), smtp_sink)
    engine = get_engine(db_url)
    smtp_sink.faults["ada@example.org"] = [GREY]
    first = run_send(settings, engine, DAY, now=T0)
    assert first.report.counts == {"sent": 1, "deferred": 1}
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.first_try_at, ada.next_try_at) == ("deferred", T0, minutes(5))
    again = run_send(settings, engine, DAY, now=minutes(5))
    assert again.due == 1 and again.report.counts == {"sent": 1}
    ada = row(engine, "ada@example.org")
    assert (ada.status, ada.first_try_at, ada.next_try_at) == ("sent", T0, None)
    assert smtp_sink.count("ada@example.org") == smtp_sink.count("grace@example.org") == 1


def test_rows_an_interrupted_send_left_pending_are_sent_by_the_retry_job(
        world, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """A `send` stopped part-way (Ctrl-C, SIGTERM, a crash) leaves its edition's other
    rows pending. No slot plans those people again (they have that day's row), so the
    daemon's retry job sends them once nothing has touched them for ``LEFT_AFTER``:
    not while they are fresh (the workers of a `send --queue` start first), not while
    a run holds a row of that edition (it is being delivered), each once."""
    from sqlalchemy import update

    from newsletter.service.editions import LEFT_AFTER
    from newsletter.store.models import DeliveryStatus, Edition

    from .editions_support import plan_edition

    settings, engine = world
    settings = smtp(settings, smtp_sink)
    app = App(settings, engine)
    planned = plan_edition(settings, engine, DAY)  # planned, then the run was stopped
    assert planned.edition is not None and planned.pending > 0
    edition = planned.edition.id
    with session_scope(engine) as s:
        touched = s.scalar(select(func.max(Delivery.updated_at))
                           .where(Delivery.edition_id == edition))
        first = s.scalar(select(func.min(Delivery.id)).where(Delivery.edition_id == edition))
    assert touched is not None
    fresh = retry_deferred(app, now=touched + LEFT_AFTER - dt.timedelta(minutes=1))
    assert fresh.due == 0 and smtp_sink.messages == []
    with session_scope(engine) as s:  # a live run holds one of its rows
        s.execute(update(Delivery).where(Delivery.id == first).values(
            status=DeliveryStatus.SENDING, lease_owner="elsewhere:1:1",
            lease_expires=touched + dt.timedelta(hours=1)))
    held = retry_deferred(app, now=touched + LEFT_AFTER)
    assert held.due == 0 and smtp_sink.messages == []
    with session_scope(engine) as s:  # that run was killed: its lease runs out
        s.execute(update(Delivery).where(Delivery.id == first).values(
            lease_expires=touched - dt.timedelta(seconds=1)))
    with caplog.at_level(logging.INFO, logger="newsletter.scheduler"):
        done = retry_deferred(app, now=touched + LEFT_AFTER)
    assert done.due == planned.pending and done.editions == [edition]
    assert done.resumed == planned.pending  # said as such, not as deferred rows due
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("deferred:")]
    assert said == [f"deferred: 0 due, {planned.pending} left pending by an interrupted "
                    f"run; sent {planned.pending}, deferred again 0, failed 0"], said
    assert done.report.counts == {"sent": planned.pending}
    assert retry_deferred(app, now=touched + 2 * LEFT_AFTER).due == 0  # nothing left
    assert sorted({n for n in (smtp_sink.count(r) for r, _ in smtp_sink.messages)}) == [1]
    with session_scope(engine) as s:
        assert s.scalar(select(Edition.id).where(Edition.id == edition)) == edition
        left = s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == edition, Delivery.status != DeliveryStatus.SENT))
    assert left == 0



@pytest.mark.parametrize("pipelining", [True, False])
def test_a_message_whose_end_gets_no_answer_is_deferred_not_sent_again(
        world, smtp_sink: SmtpSink, pipelining: bool) -> None:  # type: ignore[no-untyped-def]
    """A server that takes each message and answers its end later than [smtp]
    data_timeout (a slow content filter) has the message: each is deferred at once,
    one copy each, where the run tried it max_attempts times (five copies); and
    max_attempts such messages in a row stop the run as a fault of the sending side
    (the rest stays pending), where it went on through the whole list."""
    from newsletter.errors import SendingStopped

    settings, engine = world
    smtp_sink.pipelining = pipelining
    smtp_sink.answer_after = 0.6
    slow = smtp(settings, smtp_sink).replace(
        transport={"max_attempts": 5, "backoff_seconds": 0.01, "concurrency": 1},
        smtp={"timeout": 2.0, "data_timeout": 0.3, "connections": 1})
    with pytest.raises(SendingStopped, match="5 messages in a row"):
        run_send(slow, engine, DAY)
    people = {r for r, _ in smtp_sink.messages}
    assert len(people) == 5 and {smtp_sink.count(r) for r in people} == {1}  # never twice
    with session_scope(engine) as s:
        by = dict(s.execute(select(Delivery.status, func.count())
                            .group_by(Delivery.status)).all())
        reasons = s.scalars(select(Delivery.last_error).where(
            Delivery.status == "deferred")).all()
    assert by.get("deferred") == 5 and by.get("pending", 0) >= 1 and "sent" not in by, by
    assert all("may have it" in r for r in reasons), reasons


def test_a_send_with_only_deferred_rows_left_says_when_they_go(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A second `send` before the deferred rows are due plans and sends nothing; it
    says they wait and when, not that nothing is left to deliver."""
    settings, engine = world
    settings = smtp(settings, smtp_sink)
    with session_scope(engine) as s:
        emails = s.scalars(select(Subscriber.email)).all()
    for email in emails:
        smtp_sink.faults[email] = [GREY]
    first = run_send(settings, engine, DAY)
    assert first.report.counts["deferred"] == len(emails)
    again = run_send(settings, engine, DAY)
    assert again.report.counts.get("sent", 0) == 0
    assert "deferred deliveries wait for their next try" in again.note, again.note


def test_rows_a_live_process_here_holds_are_not_taken_back_however_old_their_lease(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A process of this host that still runs holds its rows after their lease ran
    out (its loop may be blocked past a renewal, and one answer may take [smtp]
    data_timeout). Neither the retry job nor another run's reclaim takes them (that
    sent each twice); an edition planned more than [delivery] retry_hours ago is not
    taken either (stopped long ago: not sent out of the blue)."""
    from sqlalchemy import update

    from newsletter.delivery.ledger import DbLedger
    from newsletter.store.models import DeliveryStatus, Edition

    from .editions_support import plan_edition

    settings, engine = world
    settings = smtp(settings, smtp_sink)
    app = App(settings, engine)
    planned = plan_edition(settings, engine, DAY)
    assert planned.edition is not None
    live = DbLedger(engine, planned.edition)  # this process: alive, sending
    held = live.claim(3)
    assert len(held) == 3
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=30)
    with session_scope(engine) as s:
        s.execute(update(Delivery).where(Delivery.edition_id == planned.edition.id)
                  .values(updated_at=old, lease_expires=old + dt.timedelta(minutes=2)))
    assert DbLedger(engine, planned.edition).reclaim() == 0
    assert retry_deferred(app).due == 0 and smtp_sink.messages == []
    with session_scope(engine) as s:  # that run ended; but the edition is two days old
        s.execute(update(Delivery).where(Delivery.edition_id == planned.edition.id)
                  .values(status=DeliveryStatus.PENDING, lease_owner="", lease_expires=None,
                          created_at=old - dt.timedelta(days=2)))
    assert retry_deferred(app).due == 0 and smtp_sink.messages == []
    with session_scope(engine) as s:  # planned within retry_hours: sent, once each
        s.execute(update(Delivery).where(Delivery.edition_id == planned.edition.id)
                  .values(created_at=old))
        n = s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == planned.edition.id))
        assert s.get(Edition, planned.edition.id) is not None
    done = retry_deferred(app)
    assert done.due == n and done.report.counts == {"sent": n}
    assert {smtp_sink.count(r) for r, _ in smtp_sink.messages} == {1}


def test_a_worker_elsewhere_does_not_take_rows_whose_answers_are_slow(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A worker on another host holds its claimed rows only by their lease. Its batch's
    messages can wait longer than that (a slow server answers each end late; ``[smtp]
    data_timeout`` allows 600 s against a lease of 120 s): the delivering loop renews
    the lease while it holds rows, so a second worker's reclaim finds nothing to take
    and nobody gets a message twice (before, the second worker took the rows whose
    lease ran out and sent them again)."""
    from newsletter.delivery.ledger import DbLedger

    settings, engine = world
    settings, planned = slowly_answered(settings, engine, smtp_sink, 0.8)
    rows = planned.pending
    assert rows >= 8  # at 0.8 s each, the last answers come well after a 3 s lease
    # the sending worker: another host's process, so only its lease protects its rows.
    # A lease of 3 s is renewed every 0.75 s and lapses (rows given back) when no renewal
    # succeeded for 2.25 s: a loaded machine may hold a renewal up by a second (with a
    # 1 s lease, renewed every 0.25 s, 0.5 s late lost the rows, and the test failed)
    elsewhere = DbLedger(engine, planned.edition, owner="mailer-2:4242:0f0f0f0f",
                         lease_seconds=3)
    taken: list[int] = []

    def second_worker(done: threading.Event) -> None:  # this host: reclaims what looks
        here = DbLedger(engine, planned.edition)       # abandoned, and claims it
        # Once the sending worker holds every row: until then the rows still pending are
        # anyone's to claim (it claims one row, then the rest: a loaded machine slow to
        # get to the second claim let this worker take them first, and the test failed)
        while not done.is_set() and pending(engine, planned.edition.id):
            time.sleep(0.01)
        while not done.wait(0.1):
            here.reclaim()
            taken.extend(job.delivery_id for job in here.claim(100))

    report = deliver_once(settings, elsewhere, planned.context, beside=second_worker)
    assert taken == []
    assert report.counts == {"sent": rows}
    assert once_each(smtp_sink, rows)


def test_a_deferred_row_skipped_as_its_reader_left_says_why_in_status(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A row deferred by a 451, whose reader unsubscribes before the next try, is
    skipped then; `status` names that reason, not the earlier try's 451 (which it
    showed as the reason the row was skipped)."""
    from newsletter.store import lifecycle

    settings, engine = world
    settings = smtp(settings, smtp_sink)
    smtp_sink.faults["ada@example.org"] = [GREY]
    first = run_send(settings, engine, DAY, now=T0)
    assert first.report.counts.get("deferred") == 1
    with session_scope(engine) as s:
        ada = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert ada is not None and lifecycle.unsubscribe(s, ada, by="test")
    run_send(settings, engine, DAY, now=minutes(5))
    assert row(engine, "ada@example.org").status == "skipped"
    assert smtp_sink.count("ada@example.org") == 0
    shown = {e["email"]: e for e in status(engine)["last_errors"]}
    assert shown["ada@example.org"]["status"] == "skipped"
    assert shown["ada@example.org"]["error"] == "subscriber unsubscribed before delivery"


def test_a_deferred_email_is_explained_with_the_keywords_it_was_picked_for(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A reader changes their keywords while their email waits for a retry: the papers
    it carries were picked for the old profile, and the email still says why, with
    that profile's terms (before, it was explained with the new profile, which
    matched none of them, and said why for no paper)."""
    import email

    from newsletter.store import lifecycle

    settings, engine = world
    settings = smtp(settings, smtp_sink)
    smtp_sink.faults["ada@example.org"] = [GREY]
    assert run_send(settings, engine, DAY, now=T0).report.counts.get("deferred") == 1
    with session_scope(engine) as s:
        ada = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert ada is not None
        old = ada.keywords
        lifecycle.update_preferences(s, ada, keywords="quantum chromodynamics, lattice QCD",
                                     tz=ada.tz, hour=ada.send_hour, paused=False)
    again = run_send(settings, engine, DAY, now=minutes(5))
    assert again.report.counts == {"sent": 1}
    [(_, data)] = [m for m in smtp_sink.messages if m[0] == "ada@example.org"]
    message = email.message_from_bytes(data)
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    body = text.get_payload(decode=True).decode()
    assert "matched your interests" in body or "==" in body, body[:400]
    assert "matched: " in body
    assert any(term.strip().lower() in body.lower() for term in old.split(","))
    assert "quantum chromodynamics" not in body


@pytest.mark.slow  # ~10 s: a delivery held up by a database that hangs
def test_a_loop_whose_lease_renewals_hang_gives_its_rows_to_another_host_once(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """A database that hangs rather than fails (a migration's lock, a stuck
    connection) holds one loop's lease renewals up for 6 s while a second host keeps
    claiming. Past most of a lease without a renewal the first loop starts no more
    messages and gives its rows back (its records go on: a renewal runs apart from
    them); the second host sends those. Every reader gets one copy, and no row is left
    behind (before, the first loop went on sending rows whose leases ran out, which
    the second host took back and sent again).
    """
    from newsletter.delivery.ledger import DbLedger

    settings, engine = world
    with session_scope(engine) as s:
        for i in range(32):
            add(s, f"more{i}@example.org", keywords="attention, diffusion")
    settings, planned = slowly_answered(settings, engine, smtp_sink, 0.2)
    rows = planned.pending
    assert rows >= 40  # 0.2 s each: 8 s to send them all, the hang begins at 2 s

    class Hanging(DbLedger):
        renewals = 0

        def renew(self) -> int:
            self.renewals += 1
            if self.renewals == 2:  # the second renewal waits 6 s for the database
                time.sleep(6)
            return super().renew()

    first = Hanging(engine, planned.edition, owner="mailer-2:4242:0f0f0f0f",
                    lease_seconds=4)
    others: list[Any] = []

    def second_host(done: threading.Event) -> None:  # takes what looks abandoned
        here = DbLedger(engine, planned.edition)
        while not done.wait(0.2):
            here.reclaim()
            others.append(deliver_once(settings, here, planned.context))

    report = deliver_once(settings, first, planned.context, beside=second_host)
    by_second = sum(r.counts.get("sent", 0) for r in others)
    assert by_second > 0 and report.counts.get("sent", 0) > 0
    assert report.counts.get("sent", 0) + by_second == rows
    assert once_each(smtp_sink, rows)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.edition_id == planned.edition.id, Delivery.status != "sent")) == 0


def test_a_reclaim_takes_only_the_rows_whose_lease_ran_out_on_another_host(
        world) -> None:  # type: ignore[no-untyped-def]
    """Another host's holder whose earliest lease ran out may have renewed the rest
    (or claimed them later): only the rows whose own lease is over are taken back
    (before, all of its rows were, the renewed ones with them, and sent twice)."""
    from sqlalchemy import update

    from newsletter.delivery.ledger import DbLedger
    from newsletter.store.models import utcnow

    from .editions_support import plan_edition

    settings, engine = world
    planned = plan_edition(settings, engine, DAY)
    assert planned.edition is not None
    elsewhere = DbLedger(engine, planned.edition, owner="mailer-2:4242:0f0f0f0f")
    held = elsewhere.claim(4)
    assert len(held) == 4
    old = [job.delivery_id for job in held[:2]]
    with session_scope(engine) as s:
        s.execute(update(Delivery).where(Delivery.id.in_(old))
                  .values(lease_expires=utcnow() - dt.timedelta(seconds=1)))
    assert DbLedger(engine, planned.edition).reclaim() == 2
    with session_scope(engine) as s:
        still = set(s.scalars(select(Delivery.id).where(
            Delivery.lease_owner == "mailer-2:4242:0f0f0f0f")))
    assert still == {job.delivery_id for job in held[2:]}


def test_status_counts_the_readers_day_across_the_slots_that_carried_it(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    """With hourly slots a day is many editions: a 07:00 reader refused for good, then
    the 08:00 slot. `status` shows the latest edition (08:00) as before, and also the
    readers' day across both, with the 07:00 failure (before, the latest edition alone
    hid it)."""
    settings, engine = world
    populate_slots(engine)
    settings = smtp(settings, smtp_sink)
    app = App(settings, engine)
    smtp_sink.faults["early@example.org"] = ["554 5.7.1 rejected by policy"]
    send_slot(app, dt.datetime(2025, 12, 26, 7, tzinfo=dt.UTC))
    send_slot(app, dt.datetime(2025, 12, 26, 8, tzinfo=dt.UTC))
    shown = status(engine)
    assert shown["slot"] == "08" and shown["counts"]["failed"] == 0
    assert shown["day_editions"] == 2
    assert shown["day_counts"]["failed"] == 1 and shown["day_counts"]["sent"] >= 1
    [failed] = shown["day_errors"]
    assert (failed["email"], failed["slot"], failed["status"]) == (
        "early@example.org", "07", "failed")
    assert "554" in failed["error"]


def test_rows_a_lapse_leaves_pending_are_said(cli, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Rows given back because their leases could not be renewed in time, still
    pending when the run ends without a stop, are counted and said by `send` (exit 0,
    the edition not finished), never left silently. The lapse is made by telling the
    loop that every other row may not be its own any more."""
    from newsletter.delivery import deliver as deliver_mod

    monkeypatch.setattr(deliver_mod._Run, "may_send",
                        lambda self, job: bool(job.delivery_id % 2))
    sample = str(ROOT / "newsletter" / "data" / "sample_papers.json")
    assert cli("ingest", sample).code == 0
    for i in range(4):
        assert cli("subscribers", "add", f"r{i}@example.org", "--keywords",
                   "diffusion, attention").code == 0
    sent = cli("send", "--yes")
    assert sent.code == 0, sent.stderr
    assert "sent 2," in sent.stderr
    assert ("2 deliveries went back to pending (their leases could not be renewed in "
            "time)") in sent.stderr, sent.stderr
