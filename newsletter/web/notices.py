"""The webhook endpoint: ``POST /webhooks/<provider>/<token>``.

Order of checks: the provider exists and the URL token is that provider's current
one (else 404, so the URL space reveals nothing); the body is within the cap
(413); the provider's own proof verifies (401) and the payload is well-formed
(400); the notice is new (its event id is not in ``webhook_events``: else 401,
``webhooks.replay``). Only then do subscribers change, through
``service.subscribers.apply_notices`` (each change recorded as ``webhook:<provider>``'s),
in the transaction that records the event id.
"""

from __future__ import annotations

import hmac
import logging
import re

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from newsletter.service import bounces, subscribers
from newsletter.web.context import Web, web_of
from newsletter.web.security import TooLarge, read_body
from newsletter.web.webhooks import Notice, Rejected, WebhookRequest, replay, webhook_tokens

log = logging.getLogger("newsletter.web.webhooks")
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _token_ok(web: Web, provider: str, token: str) -> bool:
    with web.app.session() as s:
        expected = webhook_tokens(s, create=False).get(provider, "")
    return bool(expected) and hmac.compare_digest(expected.encode(), token.encode())


def _apply(web: Web, provider: str, notices: list[Notice],
           claims: list[tuple[str, float]]) -> int | None:
    """The notices applied with their event ids recorded: how many subscribers
    changed, or None for a replay (nothing changed)."""
    try:
        with web.app.session() as s:
            replay.claim(s, provider, claims)
            if provider == "generic":  # hard, soft and complaint reports, soft ones counted
                return bounces.apply_reports(s, web.settings.bounces, notices)
            return subscribers.apply_notices(s, notices, provider=provider)
    except (replay.Replayed, IntegrityError):  # IntegrityError: the same notice, at once
        return None


async def webhook(request: Request) -> Response:
    web = web_of(request)
    provider, token = request.path_params["provider"], request.path_params["token"]
    verifier = web.verifiers.get(provider)
    if verifier is None or not TOKEN.fullmatch(token) or not await run_in_threadpool(
            _token_ok, web, provider, token):
        return PlainTextResponse("unknown webhook", status_code=404)
    if not verifier.configured():
        return PlainTextResponse(f"{provider} webhooks are not configured ([webhooks])",
                                 status_code=403)
    try:
        body = await read_body(request, web.settings.webhooks.max_body_bytes)
    except TooLarge:
        return PlainTextResponse("body too large", status_code=413)
    headers = {k.lower(): v for k, v in request.headers.items()}
    req = WebhookRequest(headers, body)
    try:
        notices = await verifier.accept(req)
    except Rejected as exc:
        log.warning("%s webhook refused: %s", provider, exc.message)
        return PlainTextResponse(exc.message, status_code=exc.status)
    except ValueError as exc:  # a misconfigured key: the operator's problem, said plainly
        log.error("%s webhook: %s", provider, exc)
        return PlainTextResponse("webhook verification is misconfigured", status_code=500)
    changed = await run_in_threadpool(_apply, web, provider, notices, req.claims)
    if changed is None:
        log.warning("%s webhook refused: a replay of a notice already acted on", provider)
        return PlainTextResponse("replayed: this signed notice was already used",
                                 status_code=401)
    return PlainTextResponse(f"{changed} subscribers updated")
