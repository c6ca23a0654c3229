"""What every page handler does with a request before its own work: read a POSTed
form under the size cap and check its CSRF token, and find the subscriber a signed
link names (``store.tokens``); each gives back the error page to answer instead when
it fails. Shared by the subscriber's pages and the vote pages, so neither imports the
other for them."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.errors import InputError
from newsletter.render.links import Claims
from newsletter.store.tokens import Holder, holder
from newsletter.web.context import Web
from newsletter.web.security import TooLarge, read_form


async def form_of(request: Request, web: Web) -> dict[str, str] | Response:
    try:
        return await read_form(request, web.settings.web.max_form_bytes)
    except TooLarge:
        return web.error(request, 413, "Too large", "This form is larger than we accept.")


def checked(request: Request, web: Web, form: dict[str, str]) -> Response | None:
    reason = web.csrf.check(request, form)
    return web.error(request, 403, "Please try again", reason) if reason else None


async def posted_form(request: Request, web: Web) -> dict[str, str] | Response:
    """A POSTed form, read under the size cap and carrying this site's CSRF token (with
    the Origin check), or the error page to answer instead."""
    form = await form_of(request, web)
    if isinstance(form, Response):
        return form
    return checked(request, web, form) or form


def _holder(web: Web, claims: Claims) -> Holder | None:
    with web.app.reading() as s:
        return holder(s, claims.ids, claims.nonce, web.legacy_link_max_id)


def signed_claims(web: Web, request: Request, purpose: str) -> Claims | Response:
    """What the URL's token claims, when we signed it for ``purpose`` (else 400)."""
    try:
        return web.signer.claims(purpose, request.path_params["token"])
    except InputError as exc:
        return web.error(request, 400, "This link does not work", exc.message)


async def token_values(web: Web, request: Request, purpose: str) -> Holder | Response:
    """The subscriber the URL's token names: signed by us for ``purpose`` (else 400)
    and made for the person who has that id now (else 410: erased, removed, or a link
    that outlived its subscriber; ``store.tokens``)."""
    claims = signed_claims(web, request, purpose)
    if isinstance(claims, Response):
        return claims
    return await held(web, request, claims)


async def held(web: Web, request: Request, claims: Claims) -> Holder | Response:
    found = await run_in_threadpool(_holder, web, claims)
    if found is None:
        return web.error(request, 410, "This link no longer works",
                         "Nothing is stored for it any more: the subscription it was made "
                         "for was deleted.")
    return found
