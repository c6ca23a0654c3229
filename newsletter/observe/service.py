"""What a long-running process (``run``, ``worker``) starts beside its work: the
metrics server on ``[metrics] port`` and its heartbeat in the database."""

from __future__ import annotations

import errno
import logging
from typing import Any

from sqlalchemy import Engine

from newsletter.config import Settings
from newsletter.errors import ConfigError, Unreachable
from newsletter.observe.heartbeat import Beater
from newsletter.observe.metrics import metrics

log = logging.getLogger("newsletter.observe")


def start_service(settings: Settings, engine: Engine, kind: str, *,
                  metrics_port: int | None = None, info: dict[str, Any] | None = None) -> Beater:
    """Serve metrics (when a port is set) and start the heartbeat; ``stop()`` the
    returned beater on the way out so ``status`` shows a clean stop, not a silence."""
    m = metrics()
    m.attach_database(engine)
    port = settings.metrics.port if metrics_port is None else metrics_port
    if port:
        try:
            m.serve(port, settings.metrics.host)
        except OSError as exc:
            # taken (by the instance a restart is replacing, or by another service):
            # tried again by the unit's restart; any other refusal is the configuration's
            error = Unreachable if exc.errno == errno.EADDRINUSE else ConfigError
            raise error(f"[metrics] port: cannot listen on {settings.metrics.host}:{port}: "
                        f"{exc.strerror}") from None
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, port)
    return Beater(engine, kind, settings.metrics.heartbeat_seconds, info).start()
