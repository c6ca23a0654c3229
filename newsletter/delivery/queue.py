"""Scale-out: workers on several machines deliver one edition from a Celery queue.

The sender plans the edition (the ledger rows) and puts ``deliver_edition`` tasks
on the queue (Redis or RabbitMQ); each worker runs the editions use case
``deliver_edition``: it claims ledger rows under its own lease until none is left.
The ledger, not the queue, decides who sends what: a task delivered twice, or two
workers on one edition, still send each message once. Needs PostgreSQL
(``[database] url``) when workers run on other machines.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from newsletter.config import QueueConfig
from newsletter.delivery.shutdown import Shutdown
from newsletter.errors import ConfigError, Unreachable, first_line
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, DeliveryStatus

TASK = "newsletter.deliver_edition"
BROKER_ATTEMPTS = 3  # connection attempts before `send --queue` / `worker` give up


def check_broker(queue: QueueConfig, attempts: int = BROKER_ATTEMPTS) -> None:
    """Connect to ``[queue] broker_url`` (a bounded number of tries) or fail in one
    line, before anything is planned or a worker banner is printed."""
    from kombu import Connection

    url = queue.broker_url
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=attempts - 1, interval_start=0.5,
                                   interval_step=0.5, interval_max=2, timeout=10)
    except Exception as exc:  # noqa: BLE001 - kombu raises several types for one cause
        # not there (yet): tried again by the unit's restart; refused (a password, a
        # vhost, a scheme, a database number): only the configuration fixes it
        error = Unreachable if _not_there(exc) else ConfigError
        raise error(f"[queue] broker_url: cannot reach {_safe(url)} after {attempts} "
                    f"attempts: {first_line(exc)}") from None


def _not_there(exc: BaseException) -> bool:
    """Whether connecting failed because nothing answered (refused, timed out, a name
    that does not resolve now), as opposed to an answer refusing this configuration."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ConnectionRefusedError, TimeoutError, socket.gaierror)):
            return True
        if isinstance(seen, OSError) and seen.errno is not None:
            return True
        text = str(seen).lower()
        if any(t in text for t in ("connection refused", "timed out", "timeout",
                                    "unreachable", "no route", "reset by peer",
                                    "temporary failure")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _safe(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def celery_app(queue: QueueConfig) -> Any:
    """A Celery app on ``[queue]``: what both the sender and the workers configure."""
    try:
        from celery import Celery
    except ImportError:  # pragma: no cover - installed with the test/scale extras
        raise ConfigError("the worker needs Celery: pip install 'newsletter[scale]'") from None
    app = Celery("newsletter", broker=queue.broker_url)
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                    task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True,
                    broker_connection_max_retries=BROKER_ATTEMPTS,
                    worker_hijack_root_logger=False,
                    task_default_queue=queue.queue_name)
    return app


def make_celery(queue: QueueConfig, task: Callable[[int, Shutdown], dict[str, int]],
                shutdown: Shutdown | None = None, early: Shutdown | None = None) -> Any:
    """The workers' Celery app, whose task runs ``task(edition_id, shutdown)`` (the
    worker wires it to the editions use case ``deliver_edition``). ``shutdown`` is set
    on the worker's warm shutdown (SIGTERM or the first SIGINT), so a task mid-edition
    stops claiming rows, finishes what is in flight, gives back the rest and returns,
    instead of holding the worker until the whole edition is sent. ``early`` is the
    stop the worker caught before Celery's handlers were in (see ``newsletter worker``);
    once Celery is ready, a stop found there becomes its warm shutdown."""
    app = celery_app(queue)
    stop = shutdown or Shutdown()
    if shutdown is not None:
        from celery.signals import worker_shutting_down

        def _on_shutdown(sig: Any = "TERM", **_kw: Any) -> None:
            name = str(sig).upper().removeprefix("SIG")
            stop.request(getattr(signal, f"SIG{name}", signal.SIGTERM))

        worker_shutting_down.connect(_on_shutdown, weak=False)
    if early is not None:
        from celery.signals import worker_ready

        def _on_ready(**_kw: Any) -> None:
            # A stop that came while Celery was starting, before its own handlers were
            # in, reached only ``early``: hand it to Celery's warm shutdown, which its
            # loop checks before taking the first task.
            if early.requested:
                from celery.worker import state

                state.should_stop = 0

        worker_ready.connect(_on_ready, weak=False)

    @app.task(name=TASK)  # type: ignore[untyped-decorator,unused-ignore]  # Celery ships no types
    def deliver_edition(edition_id: int) -> dict[str, int]:
        return task(edition_id, stop)

    return app


def run_worker(app: Any, argv: list[str]) -> int:
    """``celery worker`` with ``argv`` on ``app`` until it ends; the worker's exit code.

    What Celery's ``worker_main`` does, except that it dropped that code: a worker that
    gave up (the broker gone past ``broker_connection_max_retries``: "Unrecoverable
    error") ended ``newsletter worker`` with 0, as a clean stop does, and what
    supervises it (systemd, monitoring) took the failure for a stop. A warm shutdown
    (SIGTERM, or a first Ctrl-C, which Celery itself ends with 1) is 0; a cold one (a
    second Ctrl-C) keeps Celery's code."""
    from celery.bin.celery import celery as command
    from celery.signals import worker_shutting_down
    from click.exceptions import Exit

    stops: list[str] = []

    def _stopping(how: str = "", **_kw: Any) -> None:
        stops.append(how)

    worker_shutting_down.connect(_stopping, weak=False)
    command.params[0].default = app  # (what ``Celery.start`` does: the app to run)
    try:
        code = command.main(args=argv, standalone_mode=False)
    except Exit as exc:  # (click returns it in this mode; raised by older releases)
        code = exc.exit_code
    finally:
        command.params[0].default = None
        worker_shutting_down.disconnect(_stopping)
    if stops and "Cold" not in stops:  # SIGTERM or a first Ctrl-C: the clean stop, 0
        return 0                       # as documented (Celery ends a Ctrl-C's with 1)
    return code if isinstance(code, int) else 0


def enqueue(queue: QueueConfig, edition_id: int, tasks: int) -> None:
    celery = celery_app(queue)
    for _ in range(tasks):
        celery.send_task(TASK, args=[edition_id])


def wait_for(engine: Engine, edition_id: int, timeout: float,
             poll: float = 0.5) -> dict[str, int]:
    """Counts by state once nothing is pending or being sent (or the timeout passes)."""
    from sqlalchemy import func, select

    deadline = time.monotonic() + timeout
    while True:
        # "Is any row unfinished?" is one index probe; counting a million rows every
        # half second would cost the database a core while the workers need it.
        with session_scope(engine, readonly=True) as s:
            unfinished = s.scalar(select(Delivery.id).where(
                Delivery.edition_id == edition_id,
                Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING])).limit(1))
        if unfinished is None or time.monotonic() > deadline:
            break
        time.sleep(poll)
    with session_scope(engine, readonly=True) as s:
        return {str(k): int(v) for k, v in s.execute(
            select(Delivery.status, func.count()).where(Delivery.edition_id == edition_id)
            .group_by(Delivery.status)).all()}
