"""The web app's state, made once in ``create_app`` and reached by every handler as
``request.app.state.web``: settings, templates, signer and links, limits, caches.
Handlers are plain module-level functions; nothing is a closure or a global."""

from __future__ import annotations

import asyncio
import functools
import logging
import zoneinfo
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import jinja2
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.app import App
from newsletter.frequency import describe
from newsletter.ranking.feedback import Learned
from newsletter.ranking.view import VoteOutcome
from newsletter.render.compile import BUNDLED
from newsletter.render.links import LinkMaker, Signer, issue_hour
from newsletter.service.votes import Cast
from newsletter.store.models import SubscriberStatus
from newsletter.web import offload
from newsletter.web.offload import Renderers
from newsletter.web.picks import PicksCache
from newsletter.web.security import Csrf
from newsletter.web.webhooks import VERIFIERS, Fetcher, Verifier

log = logging.getLogger("newsletter.web")
ZONES = sorted(z for z in zoneinfo.available_timezones() if "/" in z and not z.startswith(
    ("Etc/", "SystemV/", "US/", "posix/", "right/"))) + ["UTC"]


async def https_fetch(url: str) -> bytes:
    """The real fetcher: https only, no redirects, a short timeout, a size cap."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        r = await client.get(url)
        r.raise_for_status()
        return r.content[:200_000]


@dataclass
class Web:
    app: App
    signer: Signer
    fetcher: Fetcher = https_fetch
    env: jinja2.Environment = field(init=False)
    links: LinkMaker = field(init=False)
    csrf: Csrf = field(init=False)
    flood_logged_at: float = float("-inf")  # the last "sign-ups refused" warning
    work: Renderers = field(init=False)
    verifiers: dict[str, Verifier] = field(init=False)
    email_templates: jinja2.Environment = field(init=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Ranking and rendering are CPU-bound and hold the GIL: at most two at a time, in
    # their own lane, so the database-only answers (one-click unsubscribe above all)
    # always find a free worker thread instead of queueing behind them.
    heavy: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    pool: ProcessPoolExecutor | None = None
    # Subscriber ids whose links from before link nonces are still honoured (store.tokens)
    legacy_link_max_id: int = 0

    def __post_init__(self) -> None:
        from newsletter.web.signup import email_templates

        settings = self.app.settings
        loaders: list[jinja2.BaseLoader] = []
        if settings.render.templates:
            loaders.append(jinja2.FileSystemLoader(str(Path(settings.render.templates) / "web")))
        loaders.append(jinja2.FileSystemLoader(str(BUNDLED / "web")))
        self.env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True)
        self.links = LinkMaker(settings.web, settings.sender, self.signer)
        self.csrf = Csrf(self.signer._keys[0], settings.web.base_url)
        self.work = Renderers(self.app)
        self.verifiers = {name: cls(settings.webhooks, fetcher=self.fetcher)
                          for name, cls in VERIFIERS.items()}
        self.email_templates = email_templates(settings.render.templates)

    @property
    def settings(self) -> Any:
        return self.app.settings

    @property
    def picks(self) -> PicksCache:
        return self.work.picks

    async def cpu(self, func: Any, *args: Any) -> Any:
        """Run CPU-heavy ``func`` in a worker thread of the heavy lane."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self.heavy)

    def start_pool(self) -> None:
        """The render processes (``[web] render_processes``), warmed at once."""
        import multiprocessing

        n = self.settings.web.render_processes
        if n and self.pool is None:
            self.pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=offload.init,
                                            initargs=(self.settings,))
            for _ in range(n):
                self.pool.submit(offload.warm)

    def stop_pool(self) -> None:
        """Stop the render processes and wait for them: none outlives the server."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    async def _offload(self, func: Any, *args: Any) -> Any:
        assert self.pool is not None
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    async def rank_picks(self, keywords: str, subscriber_id: int | None = None) -> list[
            dict[str, Any]]:
        """What ``keywords`` pick (cached), with ``subscriber_id``'s votes counting,
        computed off the event loop."""
        if not keywords.strip():
            return []
        if self.pool is not None:
            result: list[dict[str, Any]] = await self._offload(offload.picks, keywords,
                                                               subscriber_id)
            return result
        return await self.picks.picks(keywords, self.heavy, subscriber_id)

    async def learned(self, subscriber_id: int) -> list[Learned]:
        """What the subscriber's votes teach (``PicksCache.learned``), off the event
        loop and out of the server's process when there are render processes."""
        if self.pool is not None:
            found: list[Learned] = await self._offload(offload.learned, subscriber_id)
            return found
        result: list[Learned] = await self.cpu(self.picks.learned, subscriber_id)
        return result

    async def lesson(self, cast: Cast) -> VoteOutcome:
        """What a stored vote taught (``PicksCache.lesson``), as ``learned``."""
        if self.pool is not None:
            outcome: VoteOutcome = await self._offload(offload.lesson, cast)
            return outcome
        said: VoteOutcome = await self.cpu(self.picks.lesson, cast)
        return said

    async def render_view(self, sub_id: int, edition_id: int) -> str | None:
        """The HTML of "view in browser" (``service.emails.render_email``), rendered
        off the event loop."""
        if self.pool is not None:
            html: str | None = await self._offload(offload.view, sub_id, edition_id)
            return html
        result: str | None = await self.cpu(self.work.view, sub_id, edition_id)
        return result

    def warm(self) -> None:
        """Build the picks corpus and open the newest edition, at server start."""
        self.work.warm()

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def page(self, request: Request, name: str, status: int = 200,
             **context: Any) -> HTMLResponse:
        """A page from templates/web, with the CSRF token every form carries."""
        cookie, new = self.csrf.cookie(request)
        html = self.env.get_template(name).render(
            sender=self.settings.sender, home="/", static="/static",
            csrf=self.csrf.token_for(cookie), **context)
        response = HTMLResponse(html, status_code=status)
        if new:
            self.csrf.set_cookie(response, cookie)
        return response

    def message(self, request: Request, heading: str, text: str, status: int = 200,
                **kw: Any) -> HTMLResponse:
        return self.page(request, "message.html", status, heading=heading, text=text, **kw)

    def error(self, request: Request, status: int, heading: str, text: str) -> HTMLResponse:
        return self.page(request, "error.html", status, heading=heading, text=text)


_KNOWN_ZONES = frozenset(ZONES)
# the longest name a reader's refused zone is shown back with (the IANA names are
# at most about 30 characters); a longer one is dropped, not echoed
MAX_ZONE_SHOWN = 64


def zone_options(selected: str) -> Markup:
    """The time-zone <option>s (about 430) with ``selected`` marked: made once per zone,
    not on every page view. A refused zone is kept at the top (the reader sees what
    they sent) but never cached: the cache held every refused value an outsider posted
    (a form of a megabyte, 5 MB of options each, kept until restart)."""
    if not selected or selected in _KNOWN_ZONES:
        return _zone_options(selected)
    if len(selected) > MAX_ZONE_SHOWN:
        return _zone_options("")
    return _options([selected, *ZONES], selected)


@functools.lru_cache(maxsize=128)
def _zone_options(selected: str) -> Markup:
    return _options(ZONES, selected)


def _options(zones: list[str], selected: str) -> Markup:
    return Markup("".join(
        f'<option{" selected" if z == selected else ""}>{escape(z)}</option>' for z in zones))


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def now_hours() -> int:
    return issue_hour()


# What a subscription's state reads as on its pages.
STATUS_LABELS = {
    SubscriberStatus.ACTIVE: "subscribed", SubscriberStatus.PAUSED: "paused",
    SubscriberStatus.PENDING: "waiting for confirmation",
    SubscriberStatus.UNSUBSCRIBED: "unsubscribed",
    SubscriberStatus.BOUNCED: "stopped: your mail server refused our emails",
    SubscriberStatus.COMPLAINED: "stopped: marked as spam",
}


def status_label(status: str, frequency: str) -> str:
    """A subscription's state for its reader: how often mail comes while active
    ("daily", "on weekdays", "weekly on Friday"), else why none comes."""
    if status == SubscriberStatus.ACTIVE:
        return describe(frequency)
    return STATUS_LABELS.get(SubscriberStatus(status), status)
