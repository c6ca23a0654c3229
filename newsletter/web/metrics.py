"""``GET /metrics`` for Prometheus, on ``newsletter web``.

Protected one of two ways (``[metrics]``): a bearer token, or (the default, without
a token) answering only clients on this machine. A request that came through a
reverse proxy (it carries ``X-Forwarded-For`` or ``Forwarded``) is never taken as
local, because behind a proxy every client looks like 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.app import App
from newsletter.observe.metrics import CONTENT_TYPE_LATEST, metrics

LOCAL = {"127.0.0.1", "::1", "localhost"}


def allowed(request: Request, token: str | None, localhost_only: bool) -> bool:
    if token:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    if not localhost_only:
        return True
    proxied = "x-forwarded-for" in request.headers or "forwarded" in request.headers
    host = request.client.host if request.client else ""
    return host in LOCAL and not proxied


def metrics_route(app: App) -> Route:
    cfg = app.settings.metrics
    m = metrics()
    m.attach_database(app.engine)

    async def endpoint(request: Request) -> Response:
        if not allowed(request, cfg.token, cfg.localhost_only):
            return PlainTextResponse("forbidden: see [metrics] token and localhost_only\n",
                                     status_code=401 if cfg.token else 403)
        body = await asyncio.to_thread(m.exposition)  # reads the database
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint)
