"""Graceful stop on SIGTERM / SIGINT for ``send``, ``run`` and ``worker``.

systemd, Docker, Kubernetes and Celery's warm shutdown all stop a process with
SIGTERM, so it is the normal end of a long run, not an accident. On the first
signal the delivery loop stops claiming rows, lets the messages already handed to
the server finish and be recorded, and gives back the leases of rows it had
claimed but not started (they go back to ``pending``); then the command prints its
summary and exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM), the
shell's convention, so a script can tell "stopped" from "done" (0) and "some
deliveries failed" (3). A second signal stops at once (the default action); the
rows it leaves ``sending`` are taken back by the next run.

One object, handed down to whatever loops (no module state), so a run in a thread
(the daemon's jobs) and a Celery task see the same flag.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self._callbacks: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 0

    def on_request(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask every loop holding this object to stop after its in-flight work."""
        if not self.event.is_set():
            self.signum = signum
            self.event.set()
            for cb in self._callbacks:
                cb()

    def install(self) -> Shutdown:
        """Catch SIGTERM/SIGINT in this (main) thread; the second signal is fatal."""
        if threading.current_thread() is not threading.main_thread():
            return self

        def handler(signum: int, _frame: FrameType | None) -> None:
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            self.request(signum)

        for sig in SIGNALS:
            signal.signal(sig, handler)
        return self
