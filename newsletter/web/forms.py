"""What every page handler does with a request before its own work: read a POSTed
form under the size cap and check its CSRF token, and read a signed link's values;
each gives back the error page to answer instead when it fails. Shared by the
subscriber's pages and the vote pages, so neither imports the other for them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from newsletter.errors import InputError
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


def token_values(web: Web, request: Request, purpose: str) -> list[int] | Response:
    try:
        return web.signer.verify(purpose, request.path_params["token"])
    except InputError as exc:
        return web.error(request, 400, "This link does not work", exc.message)
