"""The web app's state, made once in ``create_app`` and reached by every handler as
``request.app.state.web``: settings, templates, signer and links, limits, caches.
Handlers are plain module-level functions; nothing is a closure or a global."""

from __future__ import annotations

import asyncio
import logging
import time
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.app import App
from newsletter.render.compile import BUNDLED
from newsletter.render.links import LinkMaker, Signer
from newsletter.web.picks import PicksCache
from newsletter.web.security import ClientLimiter, Csrf
from newsletter.web.webhooks import VERIFIERS, Fetcher, ReplayCache, Verifier

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
    limiter: ClientLimiter = field(init=False)
    picks: PicksCache = field(init=False)
    verifiers: dict[str, Verifier] = field(init=False)
    email_templates: jinja2.Environment = field(init=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        from newsletter.web.signup import email_templates

        settings = self.app.settings
        loaders: list[jinja2.BaseLoader] = []
        if settings.render.templates:
            loaders.append(jinja2.FileSystemLoader(str(Path(settings.render.templates) / "web")))
        loaders.append(jinja2.FileSystemLoader(str(BUNDLED / "web")))
        self.env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True)
        self.links = LinkMaker(settings, self.signer)
        self.csrf = Csrf(self.signer._keys[0], settings.web.base_url)
        self.limiter = ClientLimiter(settings.web.signups_per_client_per_hour)
        self.picks = PicksCache(self.app, settings.web.preview_cache_size)
        replay = ReplayCache()
        self.verifiers = {name: cls(settings.webhooks, fetcher=self.fetcher, replay=replay)
                          for name, cls in VERIFIERS.items()}
        self.email_templates = email_templates(settings.render.templates)

    @property
    def settings(self) -> Any:
        return self.app.settings

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
            sender=self.settings.sender, home="/", static="/static", csrf=self.csrf.token_for(cookie), **context)
        response = HTMLResponse(html, status_code=status)
        if new:
            self.csrf.set_cookie(response, cookie)
        return response

    def message(self, request: Request, heading: str, text: str, status: int = 200,
                **kw: Any) -> HTMLResponse:
        return self.page(request, "message.html", status, heading=heading, text=text, **kw)

    def error(self, request: Request, status: int, heading: str, text: str) -> HTMLResponse:
        return self.page(request, "error.html", status, heading=heading, text=text)


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def now_hours() -> int:
    return int(time.time() // 3600)
