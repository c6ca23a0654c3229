"""Ranking and rendering for the web pages, in a separate process.

The preferences page ranks a keyword profile and "view in browser" renders an
email: CPU work that holds Python's GIL. In the server's own process it would
make every other request wait for the GIL, one-click unsubscribes included (20
clients: p50 4.8 s where 21 ms alone). So this work goes to a small process pool
(``[web] render_processes``; 0 = worker threads in the server process), whose
processes keep their own caches: the ranking corpus per papers version, picks per
keyword set (and votes), the newest opened editions.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from newsletter.config import Settings

_web: Any = None


def _exit_with_parent(parent: int) -> None:
    """A render process whose server died (even by SIGKILL) exits too, instead of
    idling as an orphan."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def init(settings: Settings) -> None:
    """Process start: an app and a Web of its own (caches live here)."""
    global _web
    # Below the server in the CPU queue: when the machine is busy, answering a one-click
    # unsubscribe comes before ranking a preferences page.
    with contextlib.suppress(OSError):
        os.nice(5)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    from newsletter.app import App
    from newsletter.render.links import Signer
    from newsletter.store.keys import secret_keys
    from newsletter.web.context import Web

    app = App(settings)
    with app.session() as s:
        signer = Signer(secret_keys(settings.web, s))
    _web = Web(app, signer)


def warm() -> None:
    _web.warm()


def picks(keywords: str, subscriber_id: int | None = None) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _web.picks._compute(keywords, subscriber_id)
    return result


def view(sub_id: int, edition_id: int) -> str | None:
    from newsletter.web.pages import _render_view

    return _render_view(_web, sub_id, edition_id)
