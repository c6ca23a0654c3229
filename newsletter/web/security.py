"""What keeps the public pages safe from what the internet sends.

* Security headers on every answer: a strict Content-Security-Policy (no inline
  script at all; the one script is a same-origin file), ``frame-ancestors 'none'``
  so the one-button pages cannot be clickjacked, ``nosniff``, and
  ``Referrer-Policy: no-referrer`` because our URLs carry tokens. HSTS when the
  public address is https. ``Cache-Control: no-store`` unless the answer says
  otherwise (the static files are public): the pages show a subscriber's address,
  profile and emails, and set the CSRF cookie, none of it for a shared cache or the
  next user of a shared browser.
* CSRF: a double-submit token (an HttpOnly SameSite=Strict cookie, and in every
  form an HMAC of it), plus an Origin check. RFC 8058 one-click unsubscribe is the
  exception by design: the mail client posts it with no page and no cookie.
* Every request body has a cap (``BodyLimit``), checked before any parsing: a 150 MB
  POST to any route, the console's included, costs us nothing.
* Who a client is for the sign-up and login limits (``client_key``); the limits
  themselves are counted in the database, shared by every web process.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers to every response start."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cache-control", b"no-store"),  # (a route that sets its own keeps it)
        ]
        if https:
            self.headers.append((b"strict-transport-security",
                                 b"max-age=31536000; includeSubDomains"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in self.headers if h[0] not in present]
            await send(message)

        await self.app(scope, receive, add_headers)


MAX_FIELDS = 200  # our largest form has 7


class BodyLimit:
    """Pure ASGI middleware: every request body is capped before anything parses it,
    on every route (the console's login and its multipart import included).

    A ``Content-Length`` over the route's cap is answered 413 at once, without reading
    a byte of the body. Bodies without one (chunked) are counted as they arrive; past
    the cap, the next read raises ``HTTPException(413)``, which the app (or the mounted
    console) answers like any other error page. ``limit_for(path)`` is the cap."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            value = declared[0].strip()
            if len(declared) > 1 or not value.isdigit() or len(value) > 18:
                await _plain_error(send, 400, b"bad Content-Length")
                return
            if int(value) > limit:
                await _plain_error(send, 413, b"request body too large")
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, counted, send)


async def _plain_error(send: Send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": text})


MAX_ROW_ID = 2**31 - 1  # PostgreSQL ``integer``; SQLite would overflow at 2**63


class RowIdConvertor(Convertor[int]):
    """``{name:row_id}`` in a route: digits as an int, where a number no row can have
    (past 32 bits, or 19 digits and more, which do not even match) becomes 0 and
    finds nothing, instead of an OverflowError or "integer out of range" (a 500)."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        number = int(value)
        return number if number <= MAX_ROW_ID else 0

    def to_string(self, value: int) -> str:
        return str(int(value))


ROW_ID = "row_id"
register_url_convertor(ROW_ID, RowIdConvertor())


class TooLarge(Exception):
    """A body past its cap, or a form with more than ``MAX_FIELDS`` fields (413)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (``TooLarge``) anything past ``limit`` bytes,
    whether the client announced it or not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """An urlencoded form (what our pages and RFC 8058 clients post), first value
    of each field; undecodable bytes become U+FFFD rather than an exception."""
    body = await read_body(request, limit)
    text = body.decode("utf-8", "replace")
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:  # "Max number of fields exceeded"
        raise TooLarge from None
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class Csrf:
    COOKIE = "nl_csrf"
    FIELD = "csrf"

    def __init__(self, key: bytes, base_url: str) -> None:
        self.key = hashlib.sha256(b"csrf|" + key).digest()
        self.origin = origin_of(base_url)
        self.secure = base_url.startswith("https://")

    def token_for(self, cookie: str) -> str:
        return hmac.new(self.key, cookie.encode(), hashlib.sha256).hexdigest()[:32]

    def cookie(self, request: Request) -> tuple[str, bool]:
        """The client's CSRF cookie, or a new one (``True``: set it on the answer)."""
        value = request.cookies.get(self.COOKIE, "")
        if len(value) == 32 and value.isascii() and value.isalnum():
            return value, False
        return secrets.token_hex(16), True

    def set_cookie(self, response: Any, value: str) -> None:
        response.set_cookie(self.COOKIE, value, httponly=True, samesite="strict",
                            secure=self.secure, path="/")

    def check(self, request: Request, form: dict[str, str]) -> str:
        """"" when the post is ours, else the reason it is refused."""
        origin = request.headers.get("origin")
        # Under Referrer-Policy: no-referrer browsers send "Origin: null" even for our own
        # pages; then Fetch Metadata (sent by every current browser) says where it came from.
        if origin is not None and origin != "null" and origin.lower() != self.origin:
            return "this form was posted from another site"
        if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "this form was posted from another site"
        cookie = request.cookies.get(self.COOKIE, "")
        sent = form.get(self.FIELD, "")
        if not cookie or not sent or not hmac.compare_digest(
                self.token_for(cookie).encode(), sent.encode("utf-8", "replace")):
            return "this form has expired: reload the page and send it again"
        return ""


def client_key(host: str) -> str:
    """Who a client is for the limits: its address, an IPv6 one by its /64 (one machine
    has a whole /64 to pick addresses from)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
