"""Observability: Prometheus counters from a real send, /metrics on a real uvicorn with
its access rules, JSON log lines from the CLI, and heartbeats on both databases."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from newsletter.app import App
from newsletter.config import LogConfig
from newsletter.observe.heartbeat import Beater, processes
from newsletter.observe.logs import configure_logging
from newsletter.observe.metrics import metrics
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Heartbeat, utcnow
from newsletter.web import create_app

from .conftest import ROOT, SmtpSink, free_port
from .editions_support import run_send

DAY = dt.date(2025, 12, 26)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def smtp_settings(settings: Any, sink: SmtpSink) -> Any:
    return settings.replace(transport={"backend": "smtp", "backoff_seconds": 0.01},
                            smtp={"host": sink.host, "port": sink.port, "connections": 2})


@pytest.mark.slow  # ~2 s: two sends
def test_a_send_is_counted_timed_and_its_failures_told_apart(world: Any,
                                                             smtp_sink: SmtpSink) -> None:
    settings, engine = world
    smtp_sink.faults["grace@example.org"] = ["421 4.3.2 busy"]  # retried, then sent
    smtp_sink.faults["edsger@example.org"] = ["451 4.7.1 greylisted"]  # deferred at once
    smtp_sink.faults["alan@example.org"] = ["550 5.1.1 no such user"] * 5  # a hard bounce
    before = metrics().exposition().decode()
    summary = run_send(smtp_settings(settings, smtp_sink), engine, DAY)
    after = metrics().exposition().decode()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sent = summary.report.counts["sent"]
    assert sent >= 3 and len(smtp_sink.messages) == sent
    assert delta("newsletter_deliveries_total", outcome="sent") == sent
    assert delta("newsletter_deliveries_total", outcome="failed") == 1
    assert delta("newsletter_deliveries_total", outcome="deferred") == 1
    assert delta("newsletter_delivery_failures_total", reason="bounce") == 1
    assert delta("newsletter_bounces_total", kind="hard") == 1
    assert delta("newsletter_send_retries_total") == 1
    assert delta("newsletter_send_seconds_count") == sent
    assert delta("newsletter_send_seconds_sum") > 0


def test_metrics_read_the_ledger_from_the_database(world: Any, smtp_sink: SmtpSink) -> None:
    settings, engine = world
    summary = run_send(smtp_settings(settings, smtp_sink), engine, DAY)
    metrics().attach_database(engine)
    text = metrics().exposition().decode()
    edition = str(summary.edition.id)
    assert value(text, "newsletter_ledger_rows", edition=edition, status="sent") == \
        summary.report.counts["sent"]
    assert value(text, "newsletter_ledger_rows", edition=edition, status="pending") == 0
    assert value(text, "newsletter_database_up") == 1


@pytest.fixture
def web(world: Any) -> Iterator[Any]:
    """Start `newsletter web`'s app on a real uvicorn with the given [metrics] settings."""
    import uvicorn

    servers = []

    def start(**metrics_cfg: Any) -> str:
        settings, engine = world
        port = free_port()
        # no render processes: /metrics never uses them, and each would cost a Python start
        app = App(settings.replace(metrics=metrics_cfg, web={"render_processes": 0}), engine)
        server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 30  # (a loaded machine may take its time)
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "the metrics server did not start"
        return f"http://127.0.0.1:{port}/metrics"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(5)


def test_web_metrics_answer_local_clients_only_by_default(web: Any) -> None:
    url = web()
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "newsletter_deliveries_total" in r.text and "newsletter_ledger_rows" in r.text
    # through a reverse proxy every client looks local: a forwarded request is refused
    assert httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert httpx.get(url, headers={"Forwarded": "for=203.0.113.9"}).status_code == 403


def test_web_metrics_behind_a_token(web: Any) -> None:
    url = web(token="s3cret-token")
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.get(url, headers={"Authorization": "Bearer s3cret-token",
                                "X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 200 and "newsletter_send_seconds_bucket" in r.text
    open_url = web(localhost_only=False)
    assert httpx.get(open_url, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200


@pytest.mark.slow  # ~8 s: four `newsletter` processes
def test_send_logs_one_json_object_per_delivery_without_addresses(
        tmp_path: Path, smtp_sink: SmtpSink) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
           "NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
           "NEWSLETTER_SMTP__PORT": str(smtp_sink.port)}

    def nl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    assert nl("ingest", str(ROOT / "newsletter" / "data" / "sample_papers.json")).returncode == 0
    assert nl("subscribers", "import",
              str(ROOT / "newsletter" / "data" / "sample_subscribers.csv")).returncode == 0
    result = nl("send", "--yes", "--force", "--log-format", "json", "--date", DAY.isoformat())
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    outcomes = [r for r in records if r.get("outcome")]
    assert len(outcomes) == len(smtp_sink.messages) > 0
    for r in outcomes:
        assert r["outcome"] == "sent" and isinstance(r["subscriber"], int)
        assert isinstance(r["edition"], int) and r["seconds"] >= 0
        assert r["level"] == "info" and r["ts"].endswith("+00:00")
    assert len({r["subscriber"] for r in outcomes}) == len(outcomes)
    # no address anywhere (the --force warnings are records too: "the @-sign" may stay)
    address = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)*")
    assert not any(address.search(json.dumps(r)) for r in records), records
    bad = nl("send", "--yes", "--log-format", "xml")
    assert bad.returncode != 0 and "--log-format" in bad.stderr


def test_addresses_appear_in_logs_only_when_configured() -> None:
    def line(include: bool, fmt: str) -> str:
        buf = io.StringIO()
        handler = configure_logging(LogConfig(include_address=include), fmt, stream=buf)
        try:
            logging.getLogger("newsletter.delivery.outcome").info(
                "edition 1 subscriber 7: sent", extra={"edition": 1, "subscriber": 7,
                                                      "email": "ada@example.org"})
        finally:
            logging.getLogger().removeHandler(handler)
        return buf.getvalue().strip()

    hidden = json.loads(line(False, "json"))
    assert hidden["subscriber"] == 7 and "email" not in hidden
    assert json.loads(line(True, "json"))["email"] == "ada@example.org"
    assert "ada@example.org" not in line(False, "text")
    assert line(True, "text").endswith("<ada@example.org>")

    def said(include: bool) -> str:  # an address written in the message itself
        buf = io.StringIO()
        handler = configure_logging(LogConfig(include_address=include), "json", stream=buf)
        try:
            logging.getLogger("newsletter.cli").warning("failed: ada@example.org: 550 5.1.1")
        finally:
            logging.getLogger().removeHandler(handler)
        return str(json.loads(buf.getvalue())["msg"])

    assert said(False) == "failed: <address>: 550 5.1.1"
    assert said(True) == "failed: ada@example.org: 550 5.1.1"


def test_heartbeats_alive_stopped_and_silent(db_url: str) -> None:
    engine = get_engine(db_url)
    beater = Beater(engine, "worker", interval=0.2, info={"concurrency": 1}).start()
    try:
        # the thread beats again: wait for a beat later than the first (a loaded machine
        # may be slow to schedule it), then judge it at fixed moments, not by the clock
        deadline = time.monotonic() + 20
        while True:
            (mine,) = [p for p in processes(engine) if p["name"] == beater.name]
            if mine["beat_at"] > mine["started_at"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert mine["beat_at"] > mine["started_at"], "the heartbeat thread never beat"
        beat_at = dt.datetime.fromisoformat(mine["beat_at"])
        (mine,) = [p for p in processes(engine, now=beat_at + dt.timedelta(seconds=0.5))
                   if p["name"] == beater.name]
        assert mine["alive"] and mine["state"] == "alive" and mine["kind"] == "worker"
        assert mine["pid"] == os.getpid() and mine["age_seconds"] <= 0.5
    finally:
        beater.stop()
    (mine,) = [p for p in processes(engine) if p["name"] == beater.name]
    assert mine["state"] == "stopped" and not mine["alive"]
    # a process that died without a word goes silent after three missed beats
    other = Beater(engine, "run", interval=1.0).start()
    other._stop.set()  # its thread stops beating, as if killed
    assert other._thread is not None
    other._thread.join(30)  # (a beat already under way would overwrite the backdating)
    with session_scope(engine) as s:
        s.execute(update(Heartbeat).where(Heartbeat.name == other.name)
                  .values(beat_at=utcnow() - dt.timedelta(seconds=5)))
    (gone,) = [p for p in processes(engine) if p["name"] == other.name]
    assert gone["state"] == "silent" and not gone["alive"]
