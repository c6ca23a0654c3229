"""Prometheus metrics (``prometheus-client``).

Counters live in the process that does the work (a worker counts what it sent), so
each long-running process serves its own: ``newsletter web`` at ``/metrics``,
``newsletter run`` and ``newsletter worker`` on ``[metrics] port``. What the
database knows (ledger rows by state, heartbeats) is read at scrape time by
:class:`DatabaseCollector`, so any one of them shows the whole edition.

The process keeps one :class:`Metrics` (one registry), because a counter that two
objects increment separately would be two half-truths on one scrape.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, DeliveryStatus, Edition, Heartbeat, utcnow

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter("newsletter_deliveries", "Deliveries finished, by outcome "
                                  "(sent, failed, skipped).", ["outcome"], registry=r)
        self.failures = Counter("newsletter_delivery_failures", "Failed deliveries by reason "
                                "(permanent, transient, bounce, render, expired: deferred "
                                "past [delivery] retry_hours, refused_content: refused "
                                "for its size or content).", ["reason"], registry=r)
        self.retries = Counter("newsletter_send_retries", "Transient send errors retried after "
                               "a backoff.", registry=r)
        self.bounces = Counter("newsletter_bounces", "Reports of what became of sent mail, "
                               "by kind: hard (while sending or read from the bounce "
                               "mailbox), soft, refused, complaints, unsubscribes, auto_replies, "
                               "notices, unmatched, unknown.", ["kind"], registry=r)
        self.send_seconds = Histogram(
            "newsletter_send_seconds", "Time from taking a delivery to the server accepting "
            "it (render, rate limit, retries, SMTP/API call).", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.ingest_runs = Counter("newsletter_ingest_runs", "Scheduled ingest runs by outcome "
                                   "(ok, error).", ["outcome"], registry=r)
        self.ingest_papers = Counter("newsletter_ingest_papers", "Papers stored by scheduled "
                                     "ingests (new, updated).", ["result"], registry=r)
        self.last_run = Gauge("newsletter_last_run_timestamp_seconds", "When a job of this "
                              "process last finished (unix time), by job (ingest, send, "
                              "bounces).",
                              ["job"], registry=r)
        self._db: DatabaseCollector | None = None
        self._lock = threading.Lock()

    def attach_database(self, engine: Engine) -> None:
        """Also export ledger states and heartbeats, read from ``engine`` at scrape time."""
        with self._lock:
            if self._db is None:
                self._db = DatabaseCollector(engine)
                self.registry.register(self._db)
            else:  # one database per process: the latest app to attach is the one served
                self._db.engine = engine

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def serve(self, port: int, host: str) -> Any:
        """An HTTP server for ``/metrics`` in a daemon thread (``run``, ``worker``)."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)


@functools.cache
def metrics() -> Metrics:
    """The process's metrics (created on first use)."""
    return Metrics()


class DatabaseCollector(Collector):
    """Ledger rows of the latest edition by state, and heartbeat ages, from the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        ledger = GaugeMetricFamily("newsletter_ledger_rows", "Ledger rows of the latest "
                                   "edition, by state.", labels=["edition", "status"])
        beats = GaugeMetricFamily("newsletter_heartbeat_age_seconds", "Seconds since each "
                                  "running process last wrote its heartbeat.",
                                  labels=["kind", "name"])
        up = GaugeMetricFamily("newsletter_database_up", "1 if the database answered this "
                               "scrape.")
        try:
            with session_scope(self.engine, readonly=True) as s:
                latest = s.scalar(select(Edition.id).order_by(Edition.id.desc()).limit(1))
                counts: dict[str, int] = {}
                if latest is not None:
                    counts = {str(k): int(v) for k, v in s.execute(
                        select(Delivery.status, func.count()).where(
                            Delivery.edition_id == latest).group_by(Delivery.status)).all()}
                    for status in DeliveryStatus:
                        ledger.add_metric([str(latest), str(status)], counts.get(status, 0))
                now = utcnow()
                for hb in s.scalars(select(Heartbeat).where(Heartbeat.stopped_at.is_(None))):
                    beats.add_metric([hb.kind, hb.name], (now - hb.beat_at).total_seconds())
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a scrape must answer even when the DB does not
            up.add_metric([], 0)
        yield ledger
        yield beats
        yield up

    def describe(self) -> list[Any]:
        return []  # collected lazily: never query the database at registration
