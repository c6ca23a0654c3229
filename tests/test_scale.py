"""Scale-out and the scheduler: real PostgreSQL, real Redis and RabbitMQ brokers, real
`newsletter worker` processes, and the hourly send slots."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.app import App
from newsletter.config import Settings
from newsletter.delivery.scheduler import build_scheduler, send_slot
from newsletter.service.ingest import ingest
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Delivery, Edition, Subscriber
from newsletter.store.subscribers import add, import_csv

from .conftest import ROOT, SmtpSink, need_service

DAY = dt.date(2025, 12, 26)


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def populate(url: str, extra: int) -> Settings:
    settings = Settings().replace(database={"url": url})
    engine = get_engine(url)
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(ROOT / "newsletter" / "data" / "sample_papers.json")])
    with session_scope(engine) as s:
        import_csv(s, (ROOT / "newsletter" / "data" / "sample_subscribers.csv").read_bytes(),
                   "sample_subscribers.csv")
        for i in range(extra):
            add(s, f"w{i}@example.org", keywords="attention, residual")
    return settings


def worker_env(db_url: str, broker_url: str, sink: SmtpSink, queue: str) -> dict[str, str]:
    """The environment of `send --queue` and `newsletter worker` in these tests; the
    queue is the test's own, so runs sharing the broker never take each other's tasks."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
            "NEWSLETTER_DATABASE__URL": db_url, "NEWSLETTER_QUEUE__BROKER_URL": broker_url,
            "NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": sink.host,
            "NEWSLETTER_SMTP__PORT": str(sink.port), "NEWSLETTER_SMTP__CONNECTIONS": "2",
            "NEWSLETTER_QUEUE__QUEUE_NAME": f"{queue}-{os.getpid()}"}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_workers_share_an_edition_without_duplicates(pg_url: str, smtp_sink: SmtpSink,
                                                     tmp_path: Path, broker: str) -> None:
    port, url = {"redis": (6379, "redis://127.0.0.1:6379/15"),
                 "rabbitmq": (5672, "amqp://guest:guest@127.0.0.1:5672//")}[broker]
    if not reachable(port):
        need_service(broker, f"nothing listens on 127.0.0.1:{port}")
    if broker == "redis":  # no task left over from an earlier run
        import redis

        redis.Redis.from_url(url).flushdb()
    populate(pg_url, extra=60)
    smtp_sink.delay = 0.01
    env = worker_env(pg_url, url, smtp_sink, f"nl-test-{tmp_path.name}")
    workers = [subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--force"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
               for _ in range(2)]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "newsletter", "send", "--queue", "--tasks", "2", "--wait",
             "120", "--yes", "--force", "--date", DAY.isoformat()],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr
    finally:
        for w in workers:
            w.terminate()
        logs = [w.communicate(timeout=30)[1] for w in workers]
    everyone = 8 + 60
    counts: dict[str, int] = {}
    for rcpt, _ in smtp_sink.messages:
        counts[rcpt] = counts.get(rcpt, 0) + 1
    assert len(counts) == everyone and set(counts.values()) == {1}
    # both workers started (named alike, the second died at start on RabbitMQ: its
    # remote-control queue is exclusive to one connection) and stopped warm
    for log in logs:
        assert b" ready." in log and b"Unrecoverable error" not in log, log.decode()[-3000:]
    # the two queued tasks reached the workers through the broker
    received = sum(len(re.findall(r"Task newsletter\.deliver_edition\[[^\]]+\] received",
                                  log.decode())) for log in logs)
    assert received >= 2, logs
    engine = get_engine(pg_url)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.status == "sent")) == everyone


@pytest.mark.slow  # ~5 s: three slot sends
def test_hourly_slots_send_each_person_at_their_local_hour(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    app = App(settings, engine)
    # sample subscribers: Ada Europe/London 7, Grace America/New_York 6, Katherine Asia/Tokyo 9,
    # Barbara America/Los_Angeles 5, Alan Europe/Berlin 8, three UTC 7
    summary = send_slot(app, dt.datetime(2025, 12, 26, 7, 0, tzinfo=dt.UTC))  # 07:00 London
    with session_scope(engine) as s:
        got = dict(s.execute(select(Subscriber.email, Delivery.day).join(Delivery).where(
            Delivery.edition_id == summary.edition.id)).all())
    # 07:00 UTC is 07:00 in London, 08:00 in Berlin, 07:00 for the UTC readers; Tokyo's
    # 09:00 has passed (16:00 there): caught up; in Los Angeles it is 23:00 on the 25th,
    # past Barbara's 05:00: her edition of the 25th. New York (02:00) is not due yet.
    assert got == {"ada@example.org": DAY, "alan@example.org": DAY,
                   "edsger@example.org": DAY, "donald@example.org": DAY,
                   "margaret@example.org": DAY, "katherine@example.org": DAY,
                   "barbara@example.org": DAY - dt.timedelta(days=1)}
    send_slot(app, dt.datetime(2025, 12, 26, 11, 0, tzinfo=dt.UTC))  # 06:00 New York
    send_slot(app, dt.datetime(2025, 12, 26, 0, 0, tzinfo=dt.UTC))  # 19:00 the 25th, New York
    # the whole day without slots: only those not yet served, nobody twice
    from .editions_support import run_send

    run_send(settings, engine, DAY)
    with session_scope(engine) as s:
        per_day = s.execute(select(Subscriber.email, Delivery.day, func.count()).join(Delivery)
                            .group_by(Subscriber.email, Delivery.day)).all()
        slots = set(s.scalars(select(Edition.slot)))
    assert {n for _, _, n in per_day} == {1}
    assert sorted(e for e, d, _ in per_day if d == DAY) == sorted(
        ["ada@example.org", "grace@example.org", "alan@example.org", "katherine@example.org",
         "edsger@example.org", "barbara@example.org", "donald@example.org",
         "margaret@example.org"])
    assert sorted(e for e, d, _ in per_day if d != DAY) == [
        "barbara@example.org", "grace@example.org"]
    assert slots == {"07", "11", "00", ""}


def test_scheduler_registers_its_jobs(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    sched = build_scheduler(App(settings, engine))
    jobs = {job.id: job for job in sched.get_jobs()}
    assert set(jobs) == {"ingest", "send", "deferred"}
    # deferred rows are tried again every [delivery] retry_first_minutes (5)
    assert jobs["deferred"].trigger.interval == dt.timedelta(minutes=5)
    now = dt.datetime(2025, 12, 26, 4, 30, tzinfo=dt.UTC)
    assert jobs["send"].trigger.get_next_fire_time(None, now) == now.replace(hour=5, minute=0)
    assert jobs["ingest"].trigger.get_next_fire_time(None, now).hour == 5


def test_bad_slot_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    from newsletter.errors import InputError

    from .editions_support import run_send

    settings, engine = world
    with pytest.raises(InputError, match="--slot"):
        run_send(settings, engine, DAY, slot="25")


def test_worker_warm_shutdown_on_sigterm_finishes_in_flight_and_releases_the_rest(
        pg_url: str, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    """systemd and Celery's warm shutdown send SIGTERM: the worker stops claiming,
    finishes the messages in flight, gives the rest back to the ledger and exits 0;
    a second run delivers the rest, nobody twice."""
    import signal

    import redis

    if not reachable(6379):
        need_service("redis", "nothing listens on 127.0.0.1:6379")
    url = "redis://127.0.0.1:6379/14"
    redis.Redis.from_url(url).flushdb()
    populate(pg_url, extra=60)
    smtp_sink.delay = 0.1
    env = worker_env(pg_url, url, smtp_sink, f"nl-term-{tmp_path.name}")
    send = [sys.executable, "-m", "newsletter", "send", "--queue", "--tasks", "1", "--yes",
            "--force", "--date", DAY.isoformat()]
    queued = subprocess.run([*send, "--wait", "0"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert queued.returncode == 3 and "all its rows: pending 68" in queued.stderr, queued.stderr
    worker = subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--force"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    assert smtp_sink.wait_for(4, timeout=90), "the worker sent nothing"
    worker.send_signal(signal.SIGTERM)
    _, log = worker.communicate(timeout=60)
    assert worker.returncode == 0, log
    assert "Traceback" not in log
    everyone = 8 + 60
    got = len(smtp_sink.messages)
    assert got < everyone
    engine = get_engine(pg_url)
    with session_scope(engine) as s:
        counts = dict(s.execute(select(Delivery.status, func.count())
                                .group_by(Delivery.status)).all())
    assert counts.get("sending", 0) == 0  # in flight finished, the rest given back
    assert counts.get("sent") == got and counts.get("pending") == everyone - got
    smtp_sink.delay = 0
    again = subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--force"],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        done = subprocess.run([*send, "--wait", "120"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
    finally:
        again.terminate()
        again.communicate(timeout=30)
    counts_by_rcpt: dict[str, int] = {}
    for rcpt, _ in smtp_sink.messages:
        counts_by_rcpt[rcpt] = counts_by_rcpt.get(rcpt, 0) + 1
    assert len(counts_by_rcpt) == everyone and set(counts_by_rcpt.values()) == {1}


def test_an_edition_abandoned_while_its_tasks_wait_in_the_broker_sends_nothing(
        pg_url: str, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    """`send --queue` plans and enqueues; the operator abandons the edition before any
    worker runs; the tasks still reach a worker through RabbitMQ, which sends nothing of
    it, and the edition's rows stay skipped with the operator's reason."""
    if not reachable(5672):
        need_service("rabbitmq", "nothing listens on 127.0.0.1:5672")
    url = "amqp://guest:guest@127.0.0.1:5672//"
    populate(pg_url, extra=10)
    env = worker_env(pg_url, url, smtp_sink, f"nl-abandon-{tmp_path.name}")
    queued = subprocess.run(
        [sys.executable, "-m", "newsletter", "send", "--queue", "--tasks", "2", "--wait", "0",
         "--yes", "--force", "--date", DAY.isoformat()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert queued.returncode == 3 and "pending 18" in queued.stderr, queued.stderr
    gone = subprocess.run([sys.executable, "-m", "newsletter", "abandon", DAY.isoformat(),
                           "--yes", "--reason", "a broken paper"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert gone.returncode == 0, gone.stderr
    worker = subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--force"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stderr or ()), daemon=True)
    reader.start()
    done = re.compile(r"Task newsletter\.deliver_edition\[[^\]]+\] succeeded")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(done.findall("".join(lines))) < 2:
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        reader.join(timeout=30)
    log = "".join(lines)
    assert len(done.findall(log)) == 2, log[-3000:]
    assert "Traceback" not in log
    assert smtp_sink.messages == []
    engine = get_engine(pg_url)
    with session_scope(engine) as s:
        counts = dict(s.execute(select(Delivery.status, func.count())
                                .group_by(Delivery.status)).all())
        reasons = set(s.scalars(select(Delivery.reason)))
    assert counts == {"skipped": 18}
    assert len(reasons) == 1 and "a broken paper" in reasons.pop()


class _Proxy:
    """A TCP relay on 127.0.0.1 to a local service, closed on demand (the service itself
    is shared by other tests and stays up): what a worker sees when its broker goes."""

    def __init__(self, port: int) -> None:
        import threading

        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                near, _ = self.server.accept()
            except OSError:  # closed
                return
            far = socket.create_connection(("127.0.0.1", self.target))
            self.open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()
        for s in self.open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def _ready_worker(settings: Settings, tmp_path: Path, broker: str, queue: str
                  ) -> tuple[subprocess.Popen[str], list[str]]:
    """`newsletter worker` on ``broker``, and its log up to Celery's "ready" line."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
           "NEWSLETTER_DATABASE__URL": settings.database.url,
           "NEWSLETTER_QUEUE__BROKER_URL": broker,
           "NEWSLETTER_QUEUE__QUEUE_NAME": f"{queue}-{os.getpid()}"}
    worker = subprocess.Popen([sys.executable, "-m", "newsletter", "worker"], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    assert worker.stderr is not None
    log = []
    for line in worker.stderr:
        log.append(line)
        if " ready." in line:
            return worker, log
    _ended(worker, 10)  # it ended (or closed its log) before it was ready: reaped first
    raise AssertionError("the worker never said it was ready:\n" + "".join(log))


def _ended(worker: subprocess.Popen[str], timeout: float) -> str:
    """The rest of the worker's log once it ends by itself (killed past ``timeout``)."""
    try:
        return worker.communicate(timeout=timeout)[1]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


@pytest.mark.slow  # ~3 s
def test_ctrl_c_stops_a_worker_cleanly_with_0(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A first Ctrl-C is Celery's warm shutdown, the clean stop `newsletter worker`
    documents with exit 0 (Celery's own code for it is 1)."""
    import signal

    if not reachable(6379):
        need_service("redis", "nothing listens on 127.0.0.1:6379")
    worker, _ = _ready_worker(world[0], tmp_path, "redis://127.0.0.1:6379/14", "nl-int")
    worker.send_signal(signal.SIGINT)
    rest = _ended(worker, 60)
    assert worker.returncode == 0, rest
    assert "error:" not in rest and "Traceback" not in rest


@pytest.mark.slow  # ~15 s: Celery's reconnections
def test_a_worker_whose_broker_is_gone_for_good_exits_non_zero(  # type: ignore[no-untyped-def]
        world, tmp_path: Path) -> None:
    """The broker goes away and stays away past ``broker_connection_max_retries``:
    Celery's worker gives up ("Unrecoverable error"), and ``newsletter worker`` ends
    with its exit code (not 0, as a clean stop does) and says so on its last line, so
    systemd and monitoring see a failure."""
    if not reachable(6379):
        need_service("redis", "nothing listens on 127.0.0.1:6379")
    proxy = _Proxy(6379)
    try:
        worker, _ = _ready_worker(world[0], tmp_path,  # consuming through the relay
                                  f"redis://127.0.0.1:{proxy.port}/14", "nl-gone")
        proxy.close()
        rest = _ended(worker, 90)  # three reconnections: 2 + 4 + 6 s apart
    finally:
        proxy.close()
    assert worker.returncode == 1, rest
    assert "Unrecoverable error" in rest
    assert rest.strip().splitlines()[-1] == (
        "error: the worker stopped with exit code 1 (its log above says why)")
