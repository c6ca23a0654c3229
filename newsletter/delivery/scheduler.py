"""The daemon (``newsletter run``): APScheduler wiring only.

* every [[sources]] is ingested on ``[schedule] ingest_cron``;
* at the top of every UTC hour, that hour's send slot goes out: the subscribers
  whose local send hour it is, through the same ``run_send`` as the CLI.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from newsletter.app import App

log = logging.getLogger("newsletter.scheduler")


def ingest_sources(app: App) -> None:
    from newsletter.ingest.sources import run_ingest
    from newsletter.observe.metrics import metrics

    if not app.settings.sources:
        return
    m = metrics()
    try:
        report = run_ingest(app.settings, app.session, [])  # recorded for `sources list`
    except Exception:
        m.ingest_runs.labels(outcome="error").inc()
        raise
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


def send_slot(app: App, now: dt.datetime | None = None) -> Any:
    from newsletter.delivery.runs import run_send

    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    from newsletter.observe.metrics import metrics

    summary = run_send(app.settings, app.engine, now.date(), slot=f"{now.hour:02d}")
    metrics().last_run.labels(job="send").set_to_current_time()
    log.info("slot %s %02d: sent %d, failed %d", now.date(), now.hour,
             summary.report.counts["sent"], summary.report.counts["failed"],
             extra={"job": "send", "edition": summary.edition.id, "slot": f"{now.hour:02d}",
                    "sent": summary.report.counts["sent"],
                    "failed": summary.report.counts["failed"]})
    return summary


def build_scheduler(app: App) -> Any:
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    sched = BlockingScheduler(timezone=dt.UTC, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})
    sched.add_job(ingest_sources, CronTrigger.from_crontab(
        app.settings.schedule.ingest_cron, timezone=app.settings.schedule.timezone),
        args=[app], id="ingest", name="ingest every [[sources]]")
    sched.add_job(send_slot, CronTrigger(minute=0, timezone=dt.UTC), args=[app], id="send",
                  name="send this hour's slot")
    return sched
