"""Console pages and the gate in front of them. See the package docstring."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from newsletter.app import App
from newsletter.delivery.edition import EditionConfig
from newsletter.delivery.status import edition_status
from newsletter.errors import InputError, NewsletterError
from newsletter.frequency import CHOICES, describe
from newsletter.render.compile import BUNDLED
from newsletter.service import editions
from newsletter.service import preview as previews
from newsletter.service import subscribers as people
from newsletter.store import subscribers as subs_mod
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import (
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
)
from newsletter.store.queries import parse_day
from newsletter.transports import make_transport
from newsletter.web.admin import auth, charts, data
from newsletter.web.admin import preview as preview_mod
from newsletter.web.security import ROW_ID  # noqa: F401 - registers {name:row_id}

PREFIX = "/admin"
PUBLIC = frozenset({"/login", "/static/admin.css"})  # reachable without a session
SAFE_METHODS = frozenset({"GET", "HEAD"})
# The email preview is a document of its own: its inline styles are the email's,
# it runs nothing and loads nothing, and only this console may frame it (named by
# origin: in a sandboxed document 'self' is an opaque origin that matches nothing).
EMAIL_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
             "frame-ancestors {origin}")
CONSOLE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
               "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def route_path(scope: Scope) -> str:
    """The path inside the console (the mount's prefix removed)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class Console:
    """What every handler needs: the app, the templates, the cookie signer."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings
        self.page_size = self.settings.admin.page_size
        directory = (Path(self.settings.render.templates) if self.settings.render.templates
                     else BUNDLED)
        if not (directory / "web" / "admin").is_dir():
            directory = BUNDLED  # an operator's own email templates need not copy the console
        self.directory = directory / "web" / "admin"
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.directory)),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        with app.session() as s:
            self.signer = auth.CookieSigner(secret_keys(self.settings.web, s))
        self.secure = self.settings.web.base_url.startswith("https://")
        self.edition_config = EditionConfig.of(self.settings)  # what preview and retry read
        self.deliveries = editions.Background()  # retries sending after the answer
        self.base_origin = _origin(self.settings.web.base_url)

    def page(self, request: Request, name: str, code: int = 200, **context: Any
             ) -> HTMLResponse:
        state = request.scope.get("state", {}).get("admin") or {}
        sid = state.get("sid", "")
        html = self.env.get_template(name).render(
            prefix=PREFIX, user=state.get("user", ""),
            csrf=self.signer.csrf(sid) if sid else "", nav=context.pop("nav", ""),
            sender=self.settings.sender.from_name, **context)
        return HTMLResponse(html, status_code=code, headers={
            "Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-store",
            "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"})

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None,
                   path: str = PREFIX) -> None:
        response.set_cookie(name, value, max_age=max_age, path=path, httponly=True,
                            samesite="strict", secure=self.secure)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class Gate:
    """Refuses cross-site writes and anything but the public pages without a session.

    A cross-site POST is refused on two signs a browser gives (``Sec-Fetch-Site:
    cross-site``, or an ``Origin`` that is neither this host nor ``[web] base_url``),
    before any handler runs; handlers then also check a CSRF token in every form.
    """

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.inner = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        request = Request(scope)
        path = route_path(scope)
        if request.method not in SAFE_METHODS and self._cross_site(request):
            await _plain(403, "cross-site request refused")(scope, receive, send)
            return
        c = self.console
        with session_scope(c.app.engine, readonly=True) as s:
            found = auth.resolve(s, c.signer, request.cookies.get(auth.COOKIE))
            anyone = found is not None or auth.has_users(s)
        scope.setdefault("state", {})["admin"] = (
            {"sid": found[0], "user": found[1]} if found else None)
        if found is None and path not in PUBLIC:
            if not anyone:
                response: Response = c.page(request, "setup.html", 503)
            elif request.method in SAFE_METHODS:
                target = path + (f"?{scope['query_string'].decode()}"
                                 if scope.get("query_string") else "")
                response = RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}",
                                            status_code=303)
            else:
                response = _plain(403, "not logged in")
            await response(scope, receive, send)
            return
        await self.inner(scope, receive, send)

    def _cross_site(self, request: Request) -> bool:
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            return True
        origin = request.headers.get("origin")
        if origin is None:
            return False
        own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
        return origin.lower() not in (own, self.console.base_origin)


def _plain(status: int, text: str) -> Response:
    return Response(text, status_code=status, media_type="text/plain",
                    headers={"Cache-Control": "no-store"})


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default


def _day(value: str | None) -> dt.date:
    return parse_day(value, "day")


def console_of(request: Request) -> Console:
    """The console's state, made once in ``create_admin``."""
    console: Console = request.app.state.console
    return console


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token matched this session."""
    form = await request.form()
    state = request.scope["state"]["admin"]
    token = form.get("csrf")
    if not isinstance(token, str) or not console_of(request).signer.check_csrf(
            state["sid"], token):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page")
    return form


def user_of(request: Request) -> str:
    return str(request.scope["state"]["admin"]["user"])


# ---- login ---------------------------------------------------------------------------

async def login(request: Request) -> Response:
    c = console_of(request)

    def users() -> bool:  # read-only, off the event loop: a write lock held elsewhere
        with c.app.reading() as s:  # (a send, an import) must not stall every page
            return auth.has_users(s)

    anyone = await asyncio.to_thread(users)
    nxt = request.query_params.get("next", "/")
    if not nxt.startswith("/") or nxt.startswith("//"):
        nxt = "/"
    if not anyone:
        return c.page(request, "setup.html", 503)
    if request.method == "GET":
        return _login_page(request, nxt, "")
    form = await request.form()
    nonce = c.signer.unsign("login", request.cookies.get(auth.LOGIN_COOKIE, ""))
    if nonce is None or not c.signer.check_csrf(f"login:{nonce}", str(form.get("csrf", ""))):
        return _login_page(request, nxt, "The form expired: please log in again.", 403)
    client = request.client.host if request.client else "unknown"

    def check() -> auth.Login | str:  # Argon2 is slow on purpose: not on the event loop
        return auth.login(c.app.reading, c.app.session, c.settings.admin, c.signer,
                          str(form.get("name", "")), str(form.get("password", "")), client)

    done = await asyncio.to_thread(check)
    if isinstance(done, str):
        return _login_page(request, nxt, done, 401)
    response = RedirectResponse(PREFIX + nxt, status_code=303)
    c.set_cookie(response, auth.COOKIE, done.cookie, int(c.settings.admin.session_hours * 3600))
    response.delete_cookie(auth.LOGIN_COOKIE, path=PREFIX)
    return response


def _login_page(request: Request, nxt: str, error: str, code: int = 200) -> Response:
    c = console_of(request)
    nonce = secrets.token_urlsafe(16)
    response = c.page(request, "login.html", code, error=error, next=nxt,
                      login_csrf=c.signer.csrf(f"login:{nonce}"))
    c.set_cookie(response, auth.LOGIN_COOKIE, c.signer.sign("login", nonce), 3600)
    return response


async def logout(request: Request) -> Response:
    await checked_form(request)
    with console_of(request).app.session() as s:
        auth.logout(s, request.scope["state"]["admin"]["sid"])
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path=PREFIX)
    return response


async def stylesheet(request: Request) -> Response:
    return FileResponse(console_of(request).directory / "admin.css", media_type="text/css",
                        headers={"Cache-Control": "max-age=300"})


# ---- dashboard -----------------------------------------------------------------------

def dashboard(request: Request) -> Response:  # sync: Starlette runs it in a thread
    c = console_of(request)
    today = dt.datetime.now(dt.UTC).date()
    engine = c.app.engine
    with session_scope(engine, readonly=True) as s:
        editions = data.last_editions(s)
        days, series = data.daily_series(s, today)
        running = data.running_edition(s)
        subs = data.subscriber_counts(s)
        growth = data.growth(s, today)
        sources = data.sources(c.settings.sources, s)
        beats = data.heartbeats(engine, s)
        ingests = data.ingest_log(s, c.settings.schedule.timezone)
    return c.page(
        request, "dashboard.html", nav="dashboard", editions=editions, days=days,
        series=series, chart=charts.line_chart(days, series, title="Last 30 days: "
                                               + ", ".join(series)),
        running=running, progress=charts.progress_bar(
            running.percent, f"{running.percent}% done") if running else "",
        subs=subs, subs_total=sum(subs.values()), growth=growth,
        growth_chart=charts.bar_chart(growth, title="New subscribers per day, "
                                      "last 30 days"),
        sources=sources, ingests=ingests, tz=c.settings.schedule.timezone,
        heartbeats=beats, statuses=list(DeliveryStatus))


# ---- subscribers ---------------------------------------------------------------------

STATUSES = [str(x) for x in SubscriberStatus]


def subscribers(request: Request) -> Response:  # sync: Starlette runs it in a thread
    c = console_of(request)
    p = request.query_params
    q, by, status = p.get("q", ""), p.get("by", "any"), p.get("status", "")
    if status not in ("", *STATUSES):
        status = ""
    with session_scope(c.app.engine, readonly=True) as s:
        page = data.find_subscribers(s, q=q, by=by, status=status,
                                     after=_int(p.get("after")), size=c.page_size)
    base_query = {"q": q, "by": by, "status": status}
    return c.page(request, "subscribers.html", nav="subscribers", page=page, q=q, by=by,
                  status=status, statuses=STATUSES,
                  next_url=(f"?{urlencode({**base_query, 'after': page.next_after})}"
                            if page.next_after else ""),
                  first_url=f"?{urlencode(base_query)}" if p.get("after") else "",
                  report=None)


EDIT_FIELDS = ("name", "keywords", "tz", "hour", "status")


async def _save_subscriber(request: Request, sub_id: int) -> tuple[FormData, str]:
    """The posted edit, made by ``service.subscribers.edit`` as this operator: the
    form, and the error to show ("" when saved)."""
    c = console_of(request)
    form = await checked_form(request)
    given = people.Edit(**{k: str(form.get(k, "")) for k in EDIT_FIELDS},
                        frequency=None if form.get("frequency") is None
                        else str(form.get("frequency")))

    def save() -> None:
        with c.app.session() as s:
            found = s.get(Subscriber, sub_id)
            if found is None:
                raise HTTPException(404, "no such subscriber")
            people.edit(s, found, given, by=f"admin:{user_of(request)}")

    try:
        await asyncio.to_thread(save)
    except InputError as exc:  # the field's own name leads: the form's words too
        return form, exc.message
    return form, ""


async def subscriber(request: Request) -> Response:
    c = console_of(request)
    sub_id = request.path_params["sub_id"]
    error, form = "", None
    if request.method == "POST":
        form, error = await _save_subscriber(request, sub_id)
    with session_scope(c.app.engine, readonly=True) as s:
        sub = s.get(Subscriber, sub_id)
        if sub is None:
            raise HTTPException(404, "no such subscriber")
        deliveries, events = data.subscriber_history(s, sub.id)
    shown = {"name": sub.name, "keywords": sub.keywords, "tz": sub.tz,
             "hour": str(sub.send_hour), "status": sub.status, "frequency": sub.frequency}
    if form is not None and error:
        shown = {k: str(form.get(k, v)) for k, v in shown.items()}
    return c.page(request, "subscriber.html", 400 if error else 200, nav="subscribers",
                  sub=sub, shown=shown, error=error, saved=form is not None and not error,
                  deliveries=deliveries, events=events,
                  frequencies=[(f, describe(f)) for f in CHOICES],
                  statuses=list(dict.fromkeys((*people.OPERATOR_STATUSES, sub.status))))


async def import_csv(request: Request) -> Response:
    c = console_of(request)
    form = await checked_form(request)
    upload = form.get("file")
    report: dict[str, Any] = {"errors": [], "added": 0, "duplicates": [], "file": ""}
    if not isinstance(upload, UploadFile) or not upload.filename:
        report["errors"] = ["choose a CSV file (header: email,name,keywords,tz,hour)"]
    else:
        raw = await upload.read()
        name = Path(upload.filename).name
        report["file"] = name
        report["errors"] = people.check_csv(raw, name)
        if not report["errors"]:
            try:
                with c.app.session() as s:
                    result = people.import_csv(s, raw, name)
                report["added"], report["duplicates"] = result.added, result.duplicates
            except InputError as exc:
                report["errors"] = [exc.message]
    with session_scope(c.app.engine, readonly=True) as s:
        page = data.find_subscribers(s, size=c.page_size)
    return c.page(request, "subscribers.html", 400 if report["errors"] else 200,
                  nav="subscribers", page=page, q="", by="address", status="",
                  statuses=STATUSES, next_url="", first_url="", report=report)


async def export(request: Request) -> Response:
    engine = console_of(request).app.engine

    def rows() -> Any:
        with session_scope(engine, readonly=True) as s:
            buf = io.StringIO()
            subs_mod.export_csv([], buf)
            yield buf.getvalue()
            chunk: list[Subscriber] = []
            for sub in s.scalars(select(Subscriber).order_by(Subscriber.id)
                                 .execution_options(yield_per=2000)):
                chunk.append(sub)
                if len(chunk) == 2000:
                    yield _csv_rows(chunk)
                    chunk = []
            yield _csv_rows(chunk)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="subscribers-{stamp}.csv"',
        "Cache-Control": "no-store"})


# ---- editions ------------------------------------------------------------------------

def edition(request: Request) -> Response:  # sync: Starlette runs it in a thread
    c = console_of(request)
    eid = request.path_params["edition_id"]
    state = request.query_params.get("state", "")
    if state not in ("", *(str(x) for x in DeliveryStatus)):
        state = ""
    with session_scope(c.app.engine, readonly=True) as s:
        found = s.get(Edition, eid)
        if found is None:
            raise HTTPException(404, "no such edition")
        page = data.ledger_rows(s, eid, state=state,
                                after=_int(request.query_params.get("after")), size=c.page_size)
        papers = data.offered_papers(s, found)
    status = edition_status(c.app.engine, found)
    retryable = sum(1 for d, _ in page.rows if d.status == DeliveryStatus.FAILED)
    return c.page(request, "edition.html", nav="dashboard", edition=found, status=status,
                  page=page, state=state, statuses=[str(x) for x in DeliveryStatus],
                  papers=papers, retryable=retryable, notice=_heard(c, request, "notice"),
                  next_url=(f"?{urlencode({'state': state, 'after': page.next_after})}"
                            if page.next_after else ""))


async def retry(request: Request) -> Response:
    c = console_of(request)
    app, settings = c.app, c.settings
    await checked_form(request)
    eid = request.path_params["edition_id"]
    with session_scope(app.engine, readonly=True) as s:
        found = s.get(Edition, eid)
    if found is None:
        raise HTTPException(404, "no such edition")
    # Requeued now; sent in a background thread by the same delivery a worker runs,
    # so the answer comes at once, whatever the number of failures.
    try:
        queued = await asyncio.to_thread(
            editions.retry_failed, c.edition_config, app.engine, found.id,
            lambda: make_transport(settings), c.deliveries)
    except InputError as exc:  # the compliance gate: nothing was queued again
        notice = f"nothing queued again: {exc}"
    else:
        notice = (f"{queued} failed (transient, expired, refused for size or content) and "
                  "deferred deliveries queued again")
        if queued:
            notice += "; sending them in the background (reload to follow)"
    said = urlencode({"notice": _said(c, notice)})
    return RedirectResponse(f"{PREFIX}/editions/{eid}?{said}", status_code=303)


def _said(c: Console, text: str) -> str:
    """A message for the page a redirect leads to, signed: the page shows only what
    this console said (a link's own ``?notice=…`` showed an outsider's words in the
    console's voice, to an operator who had just signed in)."""
    return c.signer.sign("notice", text)


def _heard(c: Console, request: Request, name: str, limit: int = 1000) -> str:
    """The message ``_said`` put in the query's ``name``; "" when absent or not ours."""
    return (c.signer.unsign("notice", request.query_params.get(name, "")) or "")[:limit]


# ---- preview -------------------------------------------------------------------------

def preview_params(values: Any) -> tuple[str, str, str]:
    return (str(values.get("subscriber", "")).strip(), str(values.get("keywords", "")),
            str(values.get("day", "")))


async def run_preview(request: Request, subscriber: str, keywords: str, day: str
                      ) -> previews.PreviewResult:
    c = console_of(request)
    return await asyncio.to_thread(previews.preview_email, c.edition_config, c.app.engine,
                                   _day(day), subscriber=subscriber, keywords=keywords)


async def preview(request: Request) -> Response:
    subscriber, keywords, day = preview_params(request.query_params)
    result, error = None, ""
    if subscriber or keywords:
        try:
            result = await run_preview(request, subscriber, keywords, day)
        except NewsletterError as exc:
            error = str(exc)
    query = urlencode({"subscriber": subscriber, "keywords": "" if subscriber else keywords,
                       "day": day})
    c = console_of(request)
    return c.page(
        request, "preview.html", 400 if error else 200, nav="preview",
        result=result, error=error, subscriber=subscriber, keywords=keywords,
        day=day or dt.datetime.now(dt.UTC).date().isoformat(), query=query,
        sent_to=_heard(c, request, "sent_to"), test_error=_heard(c, request, "test_error"))


async def preview_email(request: Request) -> Response:
    subscriber, keywords, day = preview_params(request.query_params)
    try:
        result = await run_preview(request, subscriber, keywords, day)
    except NewsletterError as exc:
        return _plain(400, str(exc))
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return HTMLResponse(result.html or "<p>Nothing would be sent.</p>", headers={
        "Content-Security-Policy": EMAIL_CSP.format(origin=own),
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


async def preview_test(request: Request) -> Response:
    form = await checked_form(request)
    subscriber, keywords, day = preview_params(form)
    to = str(form.get("to", ""))
    back = {"subscriber": subscriber, "keywords": "" if subscriber else keywords, "day": day}
    try:
        result = await run_preview(request, subscriber, keywords, day)
        if result.message is None:
            raise InputError("nothing would be sent to this subscriber today, so there is "
                             "no message to test")
        settings = console_of(request).settings
        await preview_mod.send_test(lambda: make_transport(settings), result.message, to)
        back["sent_to"] = _said(console_of(request), subs_mod.normalize_email(to))
    except NewsletterError as exc:
        back["test_error"] = _said(console_of(request), str(exc))
    return RedirectResponse(f"{PREFIX}/preview?{urlencode(back)}", status_code=303)


# ---- papers --------------------------------------------------------------------------

def papers(request: Request) -> Response:  # sync: Starlette runs it in a thread
    c = console_of(request)
    q = request.query_params.get("q", "")
    with session_scope(c.app.engine, readonly=True) as s:
        page = data.find_papers(s, q=q, after=request.query_params.get("after", ""),
                                size=c.page_size)
    return c.page(request, "papers.html", nav="papers", page=page, q=q,
                  next_url=(f"?{urlencode({'q': q, 'after': page.next_after})}"
                            if page.next_after else ""),
                  base=c.settings.web.base_url.rstrip("/"))


async def on_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return console_of(request).page(request, "error.html", exc.status_code, message=exc.detail)


ROUTES = [
    Route("/", dashboard),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/static/admin.css", stylesheet),
    Route("/subscribers", subscribers),
    Route("/subscribers/import", import_csv, methods=["POST"]),
    Route("/subscribers/export.csv", export),
    Route("/subscribers/{sub_id:row_id}", subscriber, methods=["GET", "POST"]),
    Route("/editions/{edition_id:row_id}", edition),
    Route("/editions/{edition_id:row_id}/retry", retry, methods=["POST"]),
    Route("/preview", preview),
    Route("/preview/email", preview_email),
    Route("/preview/test", preview_test, methods=["POST"]),
    Route("/papers", papers),
]


def create_admin(app: App) -> ASGIApp:
    """The console as an ASGI app, to mount at ``/admin``: its state (``Console``)
    made once and reached by every handler as ``request.app.state.console``."""
    console = Console(app)
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: on_error}
    starlette = Starlette(routes=ROUTES, middleware=[Middleware(Gate, console=console)],
                          exception_handlers=handlers)
    starlette.state.console = console
    return starlette


def _csv_rows(subs: list[Subscriber]) -> str:
    """Rows in the export format of ``subscribers export`` (its header line dropped)."""
    buf = io.StringIO()
    subs_mod.export_csv(subs, buf)
    return buf.getvalue().split("\n", 1)[1]
