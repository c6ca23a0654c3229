"""Ranking and rendering for the web pages, in a separate process.

The preferences page ranks a keyword profile (and reads what a voter's votes
teach, as a vote's thank-you page does) and "view in browser" renders an email:
CPU work that holds Python's GIL. In the server's own process it would make
every other request wait for the GIL, one-click unsubscribes included (20
clients: p50 4.8 s where 21 ms alone). So this work goes to a small process pool
(``[web] render_processes``; 0 = worker threads in the server process), whose
processes keep their own caches: the ranking corpus per papers version, picks per
keyword set (and votes), the newest opened editions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

from newsletter.app import App
from newsletter.config import Settings
from newsletter.delivery.edition import EditionConfig
from newsletter.ranking.feedback import Learned
from newsletter.ranking.view import VoteOutcome
from newsletter.service.editions import EditionCache
from newsletter.service.emails import render_email
from newsletter.service.votes import Cast
from newsletter.web.picks import PicksCache

log = logging.getLogger("newsletter.web")


class Renderers:
    """The CPU-bound work of the web pages and its caches: the picks of keyword sets
    and the few newest opened editions. The server holds one (``[web]
    render_processes = 0``), or each render process does."""

    def __init__(self, app: App) -> None:
        self.engine = app.engine
        self.config = EditionConfig.of(app.settings)
        self.picks = PicksCache(app, app.settings.web.preview_cache_size)
        self.editions = EditionCache(4)

    def warm(self) -> None:
        """Build the picks corpus and open the newest edition, at server start."""
        self.picks.warm()
        try:
            self.editions.open_newest(self.config, self.engine)
        except Exception:  # noqa: BLE001 - an optimisation; requests open it themselves
            log.exception("opening the newest edition at start failed")

    def view(self, sub_id: int, edition_id: int) -> str | None:
        """The HTML of "view in browser"."""
        rendered = render_email(self.config, self.engine, sub_id, edition_id,
                                cache=self.editions)
        return rendered.html if rendered is not None else None


_here: Renderers | None = None  # a render process's own


def _exit_with_parent(parent: int) -> None:
    """A render process whose server died (even by SIGKILL) exits too, instead of
    idling as an orphan."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def init(settings: Settings) -> None:
    """Process start: an app and caches of its own."""
    global _here
    # Below the server in the CPU queue: when the machine is busy, answering a one-click
    # unsubscribe comes before ranking a preferences page.
    with contextlib.suppress(OSError):
        os.nice(5)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _here = Renderers(App(settings))


def _renderers() -> Renderers:
    assert _here is not None, "init() runs first in a render process"
    return _here


def warm() -> None:
    _renderers().warm()


def picks(keywords: str, subscriber_id: int | None = None) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _renderers().picks._compute(keywords, subscriber_id)
    return result


def view(sub_id: int, edition_id: int) -> str | None:
    return _renderers().view(sub_id, edition_id)


def learned(subscriber_id: int) -> list[Learned]:
    return _renderers().picks.learned(subscriber_id)


def lesson(cast: Cast) -> VoteOutcome:
    return _renderers().picks.lesson(cast)
