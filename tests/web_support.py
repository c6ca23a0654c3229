"""Helpers for the web tests: a real uvicorn on 127.0.0.1 and forms posted the way
a browser posts them (CSRF cookie + token)."""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from newsletter.app import App
from newsletter.config import Settings
from newsletter.render.links import LinkMaker, Signer
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import Subscriber
from newsletter.web import create_app
from newsletter.web.webhooks import Fetcher, webhook_tokens

from .conftest import ROOT, World, free_port

# One TLS context for the test clients of many-request tests: httpx otherwise builds one
# per client, loading the CA bundle each time (~40 ms). The sites are plain http anyway.
TLS = ssl.create_default_context()


class RowLinks(LinkMaker):
    """The site's links for a subscriber, carrying their row's link nonce as every link
    the service makes does (looked up by id; a link for an id with no row has none)."""

    def __init__(self, settings: Settings, signer: Signer, engine: Any) -> None:
        super().__init__(settings.web, settings.sender, signer)
        self.engine = engine

    def nonce_of(self, sub_id: int) -> int | None:
        with session_scope(self.engine) as s:
            found = s.scalar(select(Subscriber.link_nonce).where(Subscriber.id == sub_id))
        return None if found is None else int(found)

    def for_subscriber(self, subscriber_id: int, edition_id: int,
                       nonce: int | None = None) -> Any:
        return super().for_subscriber(subscriber_id, edition_id,
                                      nonce if nonce is not None else self.nonce_of(subscriber_id))

    def votes(self, subscriber_id: int, entry_id: str,
              nonce: int | None = None) -> dict[str, str]:
        return super().votes(subscriber_id, entry_id,
                             nonce if nonce is not None else self.nonce_of(subscriber_id))

    def unsubscribe(self, subscriber_id: int, nonce: int | None = None) -> str:
        return super().unsubscribe(subscriber_id,
                                   nonce if nonce is not None else self.nonce_of(subscriber_id))

    def preferences(self, subscriber_id: int, action: str = "",
                    nonce: int | None = None) -> str:
        return super().preferences(
            subscriber_id, action, nonce if nonce is not None else self.nonce_of(subscriber_id))

    def view(self, subscriber_id: int, edition_id: int, nonce: int | None = None) -> str:
        return super().view(subscriber_id, edition_id,
                            nonce if nonce is not None else self.nonce_of(subscriber_id))

    def confirm(self, subscriber_id: int, issued: int | None = None, *,
                nonce: int | None = None, change: int | None = None) -> str:
        return super().confirm(subscriber_id, issued, change=change,
                               nonce=nonce if nonce is not None else self.nonce_of(subscriber_id))

    def feed(self, subscriber_id: int, nonce: int | None = None) -> str:
        return super().feed(subscriber_id,
                            nonce if nonce is not None else self.nonce_of(subscriber_id))

    def mailbox_link(self, purpose: str, subscriber_id: int, issued: int | None = None, *,
                     nonce: int | None = None) -> str:
        return super().mailbox_link(
            purpose, subscriber_id, issued,
            nonce=nonce if nonce is not None else self.nonce_of(subscriber_id))


@dataclass
class Site:
    url: str
    settings: Settings
    engine: Any
    signer: Signer
    links: RowLinks
    starlette: Any

    def __iter__(self) -> Iterator[Any]:
        """(url, settings, engine, signer), as the older tuple fixture gave."""
        return iter((self.url, self.settings, self.engine, self.signer))

    def hook(self, provider: str) -> str:
        with session_scope(self.engine) as s:
            return f"{self.url}/webhooks/{provider}/{webhook_tokens(s)[provider]}"

    def sub_id(self, address: str) -> int:
        with session_scope(self.engine) as s:
            found = s.scalar(select(Subscriber.id).where(Subscriber.email == address))
            assert found is not None, address
            return int(found)

    def status(self, address: str) -> str | None:
        with session_scope(self.engine) as s:
            value = s.scalar(select(Subscriber.status).where(Subscriber.email == address))
            return None if value is None else str(value)

    def wait_background(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.starlette.state.web.tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.starlette.state.web.tasks, "background work did not finish"


@contextmanager
def running_site(settings: Settings, engine: Any, *, fetcher: Fetcher | None = None,
                 **web: Any) -> Iterator[Site]:
    import uvicorn

    port = free_port()
    # Threads in-process by default (fast to start); the render process has its own test.
    web = {"render_processes": 0} | web
    settings = settings.replace(web={"base_url": f"http://127.0.0.1:{port}", **web})
    app = App(settings, engine)
    starlette = create_app(app, fetcher=fetcher)
    server = uvicorn.Server(uvicorn.Config(starlette, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30  # (a loaded machine may take its time to start it)
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the site did not start"
    with session_scope(engine) as s:
        signer = Signer(secret_keys(settings.web, s))
    try:
        yield Site(f"http://127.0.0.1:{port}", settings, engine, signer,
                   RowLinks(settings, signer, engine), starlette)
    finally:
        server.should_exit = True
        thread.join(5)


CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def post_form(client: httpx.Client, page_url: str, data: dict[str, str],
              action: str | None = None) -> httpx.Response:
    """GET the page (cookie + token), then POST its form like a browser would."""
    page = client.get(page_url)
    found = CSRF.search(page.text)
    assert found, f"no CSRF token on {page_url}: {page.status_code}"
    origin = re.match(r"https?://[^/]+", page_url)
    assert origin
    return client.post(action or page_url, data={"csrf": found.group(1), **data},
                       headers={"Origin": origin.group(0)})


def world_on(url: str, tmp_path: Any) -> World:
    """The ``world`` fixture's database (sample papers and subscribers) at ``url``."""
    from newsletter.service.ingest import ingest
    from newsletter.store.db import get_engine
    from newsletter.store.subscribers import import_csv

    settings = Settings().replace(
        database={"url": url}, outbox={"path": str(tmp_path / "outbox")},
        sender={"reply_to": "editor@example.org", "from_address": "digest@example.org"},
        web={"base_url": "https://digest.example.org"})
    engine = get_engine(url)
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(ROOT / "newsletter" / "data" / "sample_papers.json")])
    with session_scope(engine) as s:
        data = (ROOT / "newsletter" / "data" / "sample_subscribers.csv").read_bytes()
        import_csv(s, data, "sample_subscribers.csv")
    return World(settings, engine)
