"""The Starlette app behind the links in every email, the sign-up form and the
webhooks.

``create_app`` only wires things: the state every handler reads
(``web.context.Web``), the route table (``ROUTES``, a plain list that other
modules extend, plus ``mounts``), security headers, and styled error pages. The
handlers live in ``pages`` (subscriber pages), ``owner`` (the data download and
erasure, through a link emailed to the subscriber) and ``notices`` (webhooks).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from newsletter.app import App
from newsletter.render.links import Signer
from newsletter.service.signing import begin_signing
from newsletter.store.tokens import legacy_max_id
from newsletter.web import notices, owner, pages
from newsletter.web.context import Web, web_of
from newsletter.web.feedback import FEEDBACK_ROUTES
from newsletter.web.metrics import metrics_route
from newsletter.web.security import BodyLimit, SecurityHeaders
from newsletter.web.webhooks import Fetcher, webhook_tokens

log = logging.getLogger("newsletter.web")

ROUTES: list[BaseRoute] = [
    Route("/", pages.home, methods=["GET"]),
    Route("/subscribe", pages.home, methods=["GET"]),
    Route("/subscribe", pages.subscribe, methods=["POST"]),
    Route("/confirm/{token}", pages.confirm, methods=["GET", "POST"]),
    Route("/unsubscribe/{token}", pages.unsubscribe, methods=["GET", "POST"]),
    Route("/preferences/{token}", pages.preferences, methods=["GET", "POST"]),
    # a forwarded digest's preferences link only asks for these by email (web.owner)
    Route("/preferences/{token}/data", owner.ask_data, methods=["GET", "POST"]),
    Route("/preferences/{token}/erase", owner.ask_erase, methods=["GET", "POST"]),
    Route("/preferences/{token}/archive", pages.archive, methods=["GET"]),
    Route("/data/{token}", owner.my_data, methods=["GET"]),
    Route("/erase/{token}", owner.erase, methods=["GET", "POST"]),
    Route("/feed/{token}.atom", pages.feed, methods=["GET"]),
    Route("/view/{token}", pages.view, methods=["GET"]),
    Route("/manage", pages.manage, methods=["GET"]),
    Route("/papers/{entry_id:path}", pages.paper, methods=["GET"]),
    Route("/static/{name}", pages.static, methods=["GET"]),
    Route("/webhooks/{provider}/{token}", notices.webhook, methods=["POST"]),
    *FEEDBACK_ROUTES,  # "more / less like this" and the preferences page's learning
]

ERRORS = {
    400: ("Bad request", "This request could not be understood."),
    404: ("Not found", "There is nothing at this address."),
    405: ("Not allowed", "This page does not accept that kind of request."),
    413: ("Too large", "This request is larger than we accept."),
    500: ("Something went wrong", "We could not answer this request. Please try again later."),
}


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    heading, text = ERRORS.get(status, (f"Error {status}", "This request did not work."))
    response: Response
    try:
        response = web_of(request).error(request, status, heading, text)
    except Exception:  # noqa: BLE001 - the error page itself must not fail
        response = PlainTextResponse(text, status_code=status)
    if isinstance(exc, HTTPException) and exc.headers:
        response.headers.update(exc.headers)
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("error answering %s %s", request.method, request.url.path, exc_info=exc)
    return await _http_error(request, exc)


def body_limits(settings: Any) -> Callable[[str], int]:
    """The body cap of each path: webhooks, the console's CSV import, every other form."""
    forms, hooks = settings.web.max_form_bytes, settings.webhooks.max_body_bytes
    upload = settings.admin.max_upload_bytes

    def limit_for(path: str) -> int:
        if path.startswith("/webhooks/"):
            return int(hooks)
        if path == "/admin/subscribers/import":
            return int(upload)
        return int(forms)

    return limit_for


def create_app(app: App, *, fetcher: Fetcher | None = None,
               routes: Sequence[BaseRoute] = (), mounts: Sequence[BaseRoute] = ()) -> Starlette:
    """The web app for ``app``. ``fetcher`` replaces the HTTPS client that fetches SNS
    certificates and confirms SNS subscriptions (tests pass a local one); ``routes``
    and ``mounts`` add pages (the admin console, feedback votes) to ``ROUTES``.

    Refuses to start (``ConfigError``) when the configured signing keys would break the
    links already sent (see ``service.signing``)."""
    settings = app.settings
    with app.session() as s:
        signer = Signer(begin_signing(settings.web, s, "web"))
        webhook_tokens(s)  # made once, so `webhooks urls` and the server agree
        legacy = legacy_max_id(s)
    web = Web(app, signer) if fetcher is None else Web(app, signer, fetcher)
    web.legacy_link_max_id = legacy
    from newsletter.web.admin import create_admin

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Ranking and rendering go to their own processes, warmed now, so the first
        # visitor does not pay for the caches and no request waits for the GIL.
        if settings.web.render_processes:
            web.start_pool()
        else:
            web.spawn(web.cpu(web.warm))
        try:
            yield
        finally:
            web.stop_pool()

    starlette = Starlette(
        lifespan=lifespan,
        routes=[*ROUTES, *routes, *mounts,
                # the operator console: its own sessions, CSRF and CSP
                metrics_route(app),  # Prometheus, behind [metrics] token or localhost
                Mount("/admin", app=create_admin(app))],
        middleware=[Middleware(SecurityHeaders,
                               https=settings.web.base_url.startswith("https://")),
                    Middleware(BodyLimit, limit_for=body_limits(settings))],
        exception_handlers={HTTPException: _http_error, 500: _server_error},
    )
    starlette.state.web = web
    return starlette
