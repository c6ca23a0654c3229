"""Heartbeats: ``newsletter run`` and ``newsletter worker`` say they are alive in the
database every ``[metrics] heartbeat_seconds``; ``newsletter status`` shows which are.

A process counts as alive while its last beat is younger than three periods (one
missed write is a slow database, three is a dead or stuck process). A clean stop
sets ``stopped_at``; rows silent for a week are deleted by the next process to start.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from typing import Any

from sqlalchemy import Engine, delete, select, update

from newsletter.store.db import session_scope
from newsletter.store.models import Heartbeat, utcnow

log = logging.getLogger("newsletter.heartbeat")
MISSED = 3  # periods without a beat before a process counts as gone
FORGET = dt.timedelta(days=7)


class Beater:
    """Writes this process's heartbeat from a daemon thread until :meth:`stop`."""

    def __init__(self, engine: Engine, kind: str, interval: float,
                 info: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.kind = kind
        self.interval = interval
        self.info = info or {}
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = f"{kind}:{self.host}:{self.pid}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        now = utcnow()
        with session_scope(self.engine) as s:
            found = s.get(Heartbeat, self.name)
            if found is None:
                s.add(Heartbeat(name=self.name, kind=self.kind, host=self.host, pid=self.pid,
                                interval_seconds=self.interval, started_at=now, beat_at=now,
                                info=self.info))
            else:
                found.beat_at, found.stopped_at, found.info = now, None, self.info

    def start(self) -> Beater:
        with session_scope(self.engine) as s:
            s.execute(delete(Heartbeat).where(Heartbeat.beat_at < utcnow() - FORGET))
            s.execute(delete(Heartbeat).where(Heartbeat.name == self.name))  # a reused pid
        self.beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the process
                log.warning("heartbeat not written: %s", str(exc).splitlines()[0])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with session_scope(self.engine) as s:
                s.execute(update(Heartbeat).where(Heartbeat.name == self.name)
                          .values(stopped_at=utcnow()))
        except Exception as exc:  # noqa: BLE001 - stopping anyway
            log.warning("heartbeat not closed: %s", str(exc).splitlines()[0])


def processes(engine: Engine, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every known process, newest beat first, with ``alive`` and ``age_seconds``."""
    now = now or utcnow()
    with session_scope(engine, readonly=True) as s:
        rows = list(s.scalars(select(Heartbeat).order_by(Heartbeat.beat_at.desc())))
    out = []
    for hb in rows:
        age = (now - hb.beat_at).total_seconds()
        alive = hb.stopped_at is None and age <= MISSED * hb.interval_seconds
        state = "alive" if alive else "stopped" if hb.stopped_at else "silent"
        out.append({"name": hb.name, "kind": hb.kind, "host": hb.host, "pid": hb.pid,
                    "state": state, "alive": alive, "age_seconds": round(age, 1),
                    "started_at": hb.started_at.isoformat(), "beat_at": hb.beat_at.isoformat(),
                    "info": hb.info})
    return out
