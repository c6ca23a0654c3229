"""The daemon (``newsletter run``): APScheduler wiring only.

* every [[sources]] is ingested on ``[schedule] ingest_cron``;
* at the top of every UTC hour (and once at start, to catch up after downtime),
  that hour's send slot goes out through the same ``send`` use case as the CLI: everyone
  whose local send time has passed on their local day and who has not had that
  day's edition (``slots``). A slot missed while the daemon was down is therefore
  sent late by the next one, never lost.
* every ``[delivery] retry_first_minutes`` (at least a minute, at most an hour), and
  after each slot, the deferred rows of any edition whose next try is due are sent
  again (``service.editions.retry_deferred``): a later slot never counts a deferred
  person as served, it retries their row.
* a failure of the sending side (a refused login or certificate, no connection) stops
  that run with every unsent row pending: one log line, and the next tick tries again.
* with ``[bounces] mailbox`` set, the bounce mailbox is read every ``[bounces]
  fetch_minutes`` (``service.bounces``); a mailbox that cannot be read is one log
  line, and the next tick tries again.
* SIGTERM/SIGINT: the running slot stops claiming, finishes what is in flight and
  gives the rest back; the scheduler then stops.
* mail that would be non-compliant through a real transport (an http unsubscribe
  link, a local sender, no postal address: the gate ``newsletter send`` holds) is not
  sent: the daemon says why when it starts and at every hourly slot, and keeps
  ingesting and reading bounces; ``newsletter run --force`` sends anyway, as ``send
  --force`` does. The daemon stays up rather than exits: under systemd's
  ``Restart=always`` an exit would only restart it every few seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from newsletter.app import App
from newsletter.delivery.shutdown import Shutdown

log = logging.getLogger("newsletter.scheduler")


def ingest_sources(app: App) -> None:
    from newsletter.observe.metrics import metrics
    from newsletter.service.ingest import IngestIncomplete, run_ingest

    if not app.settings.sources:
        return
    m = metrics()
    try:
        report = run_ingest(app.settings.sources, app.session, [])  # recorded for `sources list`
    except IngestIncomplete as exc:  # the others were stored: said, one line a source
        m.ingest_runs.labels(outcome="error").inc()
        for failure in exc.failed:
            log.error("ingest: %s", failure, extra={"job": "ingest"})
        report = exc.report
    except Exception:
        m.ingest_runs.labels(outcome="error").inc()
        raise
    else:
        m.ingest_runs.labels(outcome="ok").inc()
    m.ingest_papers.labels(result="new").inc(report.new)
    m.ingest_papers.labels(result="updated").inc(report.updated)
    m.last_run.labels(job="ingest").set_to_current_time()
    for loaded in report.loaded:
        for item in loaded.skipped:
            log.warning("skipped %s: %s", loaded.origin, item)
    log.info("ingested %d papers (%d new, %d items skipped)", report.total, report.new,
             report.skipped, extra={"job": "ingest", "papers": report.total, "new": report.new,
                                    "updated": report.updated, "skipped": report.skipped})


def send_slot(app: App, now: dt.datetime | None = None,
              shutdown: Shutdown | None = None) -> Any:
    """This hour's slot, through the editions use case ``send``."""
    from newsletter.delivery.edition import EditionConfig
    from newsletter.errors import NewsletterError
    from newsletter.observe.metrics import metrics
    from newsletter.service.editions import send
    from newsletter.transports import make_transport

    if shutdown is not None and shutdown.requested:
        return None
    given = now
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    try:
        summary = send(EditionConfig.of(app.settings), app.engine, now.date(),
                       make_transport(app.settings), slot=f"{now.hour:02d}",
                       shutdown=shutdown, now=given)
    except NewsletterError as exc:  # e.g. SendingStopped: the rows wait for the next tick
        log.error("slot %s %02d: %s", now.date(), now.hour, exc,
                  extra={"job": "send", "slot": f"{now.hour:02d}", "error": str(exc)})
        return None
    metrics().last_run.labels(job="send").set_to_current_time()
    counts = summary.report.counts
    if summary.edition is None and not summary.due:
        log.info("slot %s %02d: %s", now.date(), now.hour, summary.note,
                 extra={"job": "send", "slot": f"{now.hour:02d}"})
    else:
        log.info("slot %s %02d: sent %d, deferred %d, failed %d (%d deferred were due)",
                 now.date(), now.hour, counts["sent"], counts["deferred"], counts["failed"],
                 summary.due,
                 extra={"job": "send", "slot": f"{now.hour:02d}",
                        "edition": summary.edition.id if summary.edition else None,
                        "sent": counts["sent"], "deferred": counts["deferred"],
                        "failed": counts["failed"], "due": summary.due})
    if summary.left:
        log.warning("slot %s %02d: %d deliveries went back to pending (their leases "
                    "could not be renewed in time); the retry job sends them",
                    now.date(), now.hour, summary.left,
                    extra={"job": "send", "slot": f"{now.hour:02d}", "left": summary.left})
    return summary


def retry_deferred(app: App, now: dt.datetime | None = None,
                   shutdown: Shutdown | None = None) -> Any:
    """Send again the deferred rows whose next try is due (between the hourly slots).
    Never raises: a failure is one log line, and the next tick tries again."""
    from newsletter.delivery.edition import EditionConfig
    from newsletter.errors import NewsletterError
    from newsletter.service import editions
    from newsletter.transports import make_transport

    if shutdown is not None and shutdown.requested:
        return None
    try:
        done = editions.retry_deferred(EditionConfig.of(app.settings), app.engine,
                                       make_transport(app.settings), now=now,
                                       shutdown=shutdown)
    except NewsletterError as exc:
        log.error("deferred: %s", exc, extra={"job": "deferred", "error": str(exc)})
        return None
    if done.due:
        counts = done.report.counts
        # rows an interrupted run left pending are said apart: they were never deferred
        log.info("deferred: %d due, %d left pending by an interrupted run; sent %d, "
                 "deferred again %d, failed %d", done.due - done.resumed, done.resumed,
                 counts["sent"], counts["deferred"], counts["failed"],
                 extra={"job": "deferred", "due": done.due - done.resumed,
                        "resumed": done.resumed, "sent": counts["sent"],
                        "deferred": counts["deferred"], "failed": counts["failed"]})
    return done


def refuse_sending(job: str, why: str) -> None:
    """A slot or retry that the compliance gate holds back: one log line saying why."""
    log.error("%s: %s (run `newsletter check`; `newsletter run --force` sends anyway)",
              job, why, extra={"job": job, "error": why})


def fetch_bounces(app: App) -> Any:
    """Read the bounce mailbox once. Never raises: a mailbox that is down (or a report
    that trips a bug) must not stop the sending, so each failure is one log line."""
    from newsletter.errors import NewsletterError
    from newsletter.observe.metrics import metrics
    from newsletter.service.bounces import read_mailbox

    try:
        report = read_mailbox(app.engine, app.settings.bounces, app.settings.web)
    except NewsletterError as exc:
        log.error("bounces: %s", exc, extra={"job": "bounces", "error": str(exc)})
        return None
    except Exception as exc:  # noqa: BLE001 - the daemon outlives any one read
        log.error("bounces: %s: %s", type(exc).__name__, exc, exc_info=True,
                  extra={"job": "bounces", "error": str(exc)})
        return None
    metrics().last_run.labels(job="bounces").set_to_current_time()
    counts = {k: v for k, v in report.as_dict().items() if k != "bounced"}
    log.info("bounces: %s", ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none",
             extra={"job": "bounces", **counts})
    return report


def build_scheduler(app: App, shutdown: Shutdown | None = None, *,
                    background: bool = False, catch_up: bool = False,
                    refused: str = "") -> Any:
    """The daemon's jobs. ``refused``: why mail may not be sent (the compliance gate):
    the hourly send job keeps its time but only says so, and no retry job runs."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    kind = BackgroundScheduler if background else BlockingScheduler
    sched = kind(timezone=dt.UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})
    sched.add_job(ingest_sources, CronTrigger.from_crontab(
        app.settings.schedule.ingest_cron, timezone=app.settings.schedule.timezone),
        args=[app], id="ingest", name="ingest every [[sources]]")
    slot: tuple[Callable[..., Any], list[Any], dict[str, Any]] = (
        (refuse_sending, ["send", refused], {}) if refused
        else (send_slot, [app], {"shutdown": shutdown}))
    sched.add_job(slot[0], CronTrigger(minute=0, timezone=dt.UTC), args=slot[1],
                  kwargs=slot[2], id="send", name="send this hour's slot")
    from apscheduler.triggers.interval import IntervalTrigger

    every = min(max(app.settings.delivery.retry_first_minutes, 1.0), 60.0)
    if not refused:  # held: the hourly line says so; a line every few minutes is noise
        sched.add_job(retry_deferred, IntervalTrigger(minutes=every, timezone=dt.UTC),
                      args=[app], kwargs={"shutdown": shutdown}, id="deferred",
                      name="send again the deferred deliveries that are due")
    if app.settings.bounces.mailbox:
        sched.add_job(fetch_bounces, IntervalTrigger(
            minutes=app.settings.bounces.fetch_minutes, timezone=dt.UTC), args=[app],
            id="bounces", name="read the bounce mailbox")
    if catch_up and not refused:
        sched.add_job(send_slot, args=[app], kwargs={"shutdown": shutdown}, id="catch-up",
                      name="catch up: this hour's slot now",
                      next_run_time=dt.datetime.now(dt.UTC))
    return sched


def run_daemon(app: App, shutdown: Shutdown,
               announce: Callable[[str], None] = log.info, *, force: bool = False) -> None:
    """Run until ``shutdown`` is requested; then let the running job wind down.
    ``force``: send although the compliance gate finds the mail non-compliant."""
    from newsletter.delivery.check import refusal, send_blockers

    s = app.settings
    blockers = send_blockers(s.transport.backend, s.web, s.sender)
    refused = refusal(s.transport.backend, blockers) if blockers and not force else ""
    if refused:
        refuse_sending("sending", refused)
    for line in blockers if force else ():
        log.warning("sending anyway (--force): %s", line, extra={"job": "send"})
    sched = build_scheduler(app, shutdown, background=True, catch_up=True, refused=refused)
    for job in sched.get_jobs():
        announce(f"scheduled: {job.name} ({job.trigger})")
    sched.start()
    try:
        while not shutdown.event.wait(1.0):
            pass
    finally:
        sched.shutdown(wait=True)
