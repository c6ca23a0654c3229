"""The subscriber's pages: sign-up, confirm, one-click unsubscribe, preferences
(with resubscribe, archive and feed), view in browser and a page per paper. The data
download and erasure, which the preferences page only asks for by email, are
``web.owner``'s.

Nothing changes state on GET or HEAD: confirm, unsubscribe, erase and every
preference change are POSTs behind a page with one button (link scanners fetch
GETs and HEADs). Database work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from email_validator import EmailNotValidError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from newsletter.addresses import validated
from newsletter.delivery import shown
from newsletter.errors import InputError
from newsletter.frequency import CHOICES, describe
from newsletter.render.compile import BUNDLED
from newsletter.render.digest import format_date
from newsletter.service import subscribers
from newsletter.service.emails import sent_editions
from newsletter.store.lifecycle import RECEIVING
from newsletter.store.models import (
    Entry,
    Subscriber,
    SubscriberStatus,
)
from newsletter.store.subscribers import check_hour
from newsletter.urls import safe_url
from newsletter.web.context import (
    STATUS_LABELS,
    Web,
    now_hours,
    status_label,
    web_of,
    zone_options,
)
from newsletter.web.forms import form_of, posted_form, token_values
from newsletter.web.security import client_key
from newsletter.web.signup import process

log = logging.getLogger("newsletter.web")
VIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
STATIC = {"site.css": "text/css", "tz.js": "text/javascript"}


def web_address(raw: str) -> str:
    """A sign-up address: valid, ASCII only (we cannot promise SMTPUTF8 delivery), and
    normalized; a clear error otherwise."""
    raw = raw.strip()
    if not raw:
        raise InputError("enter your email address")
    if len(raw) > 254:
        raise InputError("this email address is too long")
    try:
        info = validated(raw, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InputError(f"this email address does not work: {exc}") from None
    return (info.ascii_email or info.normalized).lower()


# ---- sign-up and confirmation -------------------------------------------------------

def subscribe_page(request: Request, web: Web, status: int = 200, **kw: Any) -> Response:
    values = {"email": "", "keywords": "", "tz": "UTC", "tz_chosen": False, "hour": 7,
              "error": ""} | kw
    return web.page(request, "subscribe.html", status, zones=zone_options(str(values["tz"])),
                    **values)


def _shown_hour(hour: str) -> int:
    """The hour to show again on a refused form: theirs when it is one, else 7."""
    try:
        return check_hour(hour)
    except InputError:
        return 7


async def home(request: Request) -> Response:
    """GET / and GET /subscribe (a reload of the result page shows the form)."""
    return subscribe_page(request, web_of(request))


async def subscribe(request: Request) -> Response:
    web = web_of(request)
    form = await posted_form(request, web)
    if isinstance(form, Response):
        return form
    done = web.message(request, "Check your inbox",
                       "If this address can be subscribed, a confirmation link is on its way. "
                       "Your subscription starts when you follow it.")
    if form.get("website"):  # the honeypot: people never see it, form-filling bots do
        return done
    email, keywords = form.get("email", ""), form.get("keywords", "")
    tz, hour = form.get("tz", "UTC"), form.get("hour", "7")
    try:
        sign_up = subscribers.sign_up_form(web_address(email), keywords, tz, hour)
    except InputError as exc:
        return subscribe_page(request, web, 400, email=email, keywords=keywords, tz=tz,
                              tz_chosen=True,
                              hour=_shown_hour(hour), error=exc.message)
    client = client_key(request.client.host if request.client else "?")
    refused = await run_in_threadpool(_apply, web, subscribers.take_sign_up_slot, client,
                                      web.settings.web)
    if refused == "signups_per_client_per_hour":
        return web.error(request, 429, "Too many sign-ups",
                         "Too many sign-ups from your network in the last hour; try later.")
    if refused is not None:
        _flooded(web)
        return web.error(request, 429, "Too many sign-ups",
                         "Too many sign-ups in the last hour; please try again later.")
    # Everything that depends on the address happens after the answer: the same page,
    # in the same time, whether it is new, pending or already subscribed.
    web.spawn(process(web.app, web.links, web.email_templates, sign_up))
    return done


def _flooded(web: Web) -> None:
    """A sign-up refused because all clients together reached [web] signups_per_hour:
    one warning a minute at most, so the operator learns of the flood, not of each post."""
    now = time.monotonic()
    if now - web.flood_logged_at >= 60:
        web.flood_logged_at = now
        log.warning("sign-ups refused: %d in the last hour from all clients ([web] "
                    "signups_per_hour); confirmation emails are held back",
                    web.settings.web.signups_per_hour)


def _load(web: Web, sub_id: int) -> Subscriber | None:
    with web.app.reading() as s:
        return s.get(Subscriber, sub_id)


T = TypeVar("T")


def _read(web: Web, question: Callable[..., T], *args: Any, **kw: Any) -> T:
    """One question of the use cases (``service.subscribers``), read without the write
    lock, in a worker thread's time (what a one-button page's GET asks)."""
    with web.app.reading() as s:
        return question(s, *args, **kw)


def _apply(web: Web, use_case: Callable[..., T], *args: Any, **kw: Any) -> T:
    """One use case (``service.subscribers``) in one transaction, in a worker thread's
    time (what the POST of every one-button page does)."""
    with web.app.session() as s:
        return use_case(s, *args, **kw)


async def confirm(request: Request) -> Response:
    web = web_of(request)
    who = await token_values(web, request, "confirm")
    if isinstance(who, Response):
        return who
    values = who.values
    if len(values) < 2 or now_hours() - values[1] > web.settings.web.confirm_hours:
        return web.error(request, 400, "This link has expired",
                         "Confirmation links work for "
                         f"{web.settings.web.confirm_hours} hours. Sign up again for a new one.")
    sub_id = values[0]
    change = values[2] if len(values) > 2 else None
    prefs = web.links.preferences(sub_id, nonce=who.nonce)
    if request.method != "POST":
        ahead = await run_in_threadpool(_read, web, subscribers.confirm_outcome, sub_id,
                                        change)
        if ahead is None:
            return web.error(request, 404, "Not found", "This subscription no longer exists.")
        if ahead.outcome != "subscribed":  # no button that can do nothing
            return _confirmed(web, request, ahead, prefs)
        return web.page(request, "confirm.html", email=ahead.email)
    form = await posted_form(request, web)
    if isinstance(form, Response):
        return form

    done = await run_in_threadpool(_apply, web, subscribers.confirm, sub_id, change)
    if done is None:
        return web.error(request, 404, "Not found", "This subscription no longer exists.")
    return _confirmed(web, request, done, prefs)


def _confirmed(web: Web, request: Request, done: subscribers.Confirmed,
               prefs: str) -> Response:
    """The page of what a confirmation link did (or, on its page, cannot do)."""
    if done.outcome == "subscribed":
        return web.message(request, "You are subscribed",
                           f"{done.email} will get the next edition.",
                           link=prefs, link_text="Tune your keywords")
    if done.outcome == "updated":
        return web.message(request, "Saved", f"{done.email} gets the settings you chose.",
                           link=prefs, link_text="Your preferences")
    if done.outcome == "replaced":
        return web.message(request, "Not confirmed",
                           "A newer sign-up for this address replaced this one: follow the "
                           "link in the latest confirmation email.", 409)
    return web.message(request, "Not subscribed", f"{done.email} is "
                       f"{STATUS_LABELS.get(SubscriberStatus(done.status), done.status)}; "
                       "a confirmation link does not change that.", 409,
                       link=prefs, link_text="Your preferences")


async def unsubscribe(request: Request) -> Response:
    """RFC 8058: the POST is the one click (from the mail client, no page, no cookie:
    the signed URL is the authority). GET and HEAD only show the button."""
    web = web_of(request)
    who = await token_values(web, request, "unsubscribe")
    if isinstance(who, Response):
        return who
    sub_id = who.id
    if request.method != "POST":
        sub = await run_in_threadpool(_load, web, sub_id)
        if sub is None:
            return web.message(request, "Unsubscribed", "This address gets no more emails.")
        if sub.status not in RECEIVING:  # already out: no button that does nothing
            return web.message(request, "Unsubscribed",
                               f"{sub.email} gets no more emails from us.",
                               link=web.links.preferences(sub_id, nonce=who.nonce),
                               link_text="Changed your mind?")
        return web.page(request, "unsubscribe.html", email=sub.email,
                        preferences=web.links.preferences(sub_id, nonce=who.nonce))
    form = await form_of(request, web)
    if isinstance(form, Response):
        return form
    one_click = form.get("List-Unsubscribe") == "One-Click"
    email = await run_in_threadpool(_apply, web, subscribers.unsubscribe, sub_id,
                                    one_click=one_click)
    if email is None:
        return web.message(request, "Unsubscribed", "This address gets no more emails.")
    return web.message(request, "Unsubscribed", f"{email} will get no more emails from us.",
                       link=web.links.preferences(sub_id, nonce=who.nonce),
                       link_text="Changed your mind?")


# ---- preferences and self-service ----------------------------------------------------

async def preferences(request: Request) -> Response:
    web = web_of(request)
    who = await token_values(web, request, "preferences")
    if isinstance(who, Response):
        return who
    sub_id, nonce = who.id, who.nonce
    error, saved, keywords = "", False, None
    if request.method == "POST":
        form = await posted_form(request, web)
        if isinstance(form, Response):
            return form
        if form.get("action") == "resubscribe":
            await run_in_threadpool(_apply, web, subscribers.resubscribe, sub_id)
            saved = True
        else:
            keywords = form.get("keywords", "")
            try:
                chosen = subscribers.preferences_form(
                    keywords, form.get("tz", "UTC"), form.get("hour", "7"),
                    form.get("status", "active"), form.get("frequency"))
            except InputError as exc:
                error = exc.message
            else:
                saved = await run_in_threadpool(_apply, web, subscribers.change_preferences,
                                                sub_id, chosen)
    sub = await run_in_threadpool(_load, web, sub_id)
    if sub is None:
        return web.error(request, 404, "Not found", "This subscription no longer exists.")
    from newsletter.web.feedback import preferences_context  # it imports this module

    picks = [] if error else await web.rank_picks(sub.keywords, sub.id)
    shown = [p | {"link": web.links.paper(p["id"])} for p in picks]
    stopped = sub.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED)
    links = web.links
    return web.page(
        request, "preferences.html", 400 if error else 200, sub=sub,
        keywords=sub.keywords if keywords is None else keywords, error=error, saved=saved,
        picks=shown, zones=zone_options(sub.tz), stopped=stopped,
        frequencies=[(f, describe(f)[0].upper() + describe(f)[1:]) for f in CHOICES],
        can_resubscribe=sub.status == SubscriberStatus.UNSUBSCRIBED,
        status_label=status_label(sub.status, sub.frequency),
        unsubscribe=links.unsubscribe(sub_id, nonce),
        archive=links.preferences(sub_id, "archive", nonce),
        feed=links.feed(sub_id, nonce), data=links.preferences(sub_id, "data", nonce),
        erase=links.preferences(sub_id, "erase", nonce),
        learned=await web.learned(sub_id),
        **await run_in_threadpool(preferences_context, web, sub_id, nonce))


def _sections(record: str | None) -> str:
    """"point cloud (3), vision transformer (7)" as the sent email said ("" for an
    email sent before records were kept)."""
    found = shown.decode(record)
    return ", ".join(f"{t} ({n})" for t, n in found.sections()) if found else ""


async def archive(request: Request) -> Response:
    web = web_of(request)
    who = await token_values(web, request, "preferences")
    if isinstance(who, Response):
        return who
    sub_id, nonce = who.id, who.nonce
    sub, rows = await run_in_threadpool(sent_editions, web.app.engine, sub_id, 100)
    if sub is None:
        return web.error(request, 404, "Not found", "This subscription no longer exists.")
    editions = [{"date": format_date(d.day or e.day), "count": len(d.entry_ids),
                 "sections": _sections(d.shown),
                 "link": web.links.view(sub_id, e.id, nonce)} for d, e in rows]
    return web.page(request, "archive.html", email=sub.email, editions=editions,
                    feed=web.links.feed(sub_id, nonce),
                    preferences=web.links.preferences(sub_id, nonce=nonce))


async def feed(request: Request) -> Response:
    """A personal Atom feed of the papers picked for this subscriber (signed URL)."""
    from newsletter.web.atom import build_feed

    web = web_of(request)
    who = await token_values(web, request, "feed")
    if isinstance(who, Response):
        return who
    body = await run_in_threadpool(build_feed, web, who.id, str(request.url))
    if body is None:
        return web.error(request, 404, "Not found", "This subscription no longer exists.")
    return Response(body, media_type="application/atom+xml; charset=utf-8")


# ---- the email in a browser, and papers ----------------------------------------------

async def view(request: Request) -> Response:
    from starlette.responses import HTMLResponse

    web = web_of(request)
    who = await token_values(web, request, "view")
    if isinstance(who, Response):
        return who
    values = who.values
    html = await web.render_view(who.id, values[1] if len(values) > 1 else 0)
    if html is None:
        return web.error(request, 404, "Not available", "This email is no longer available.")
    # The email's own markup: inline styles (CSS-inlined for mail clients), never script.
    return HTMLResponse(web_version(html, web.settings.web.base_url),
                        headers={"Content-Security-Policy": VIEW_CSP})


def web_version(html: str, base_url: str) -> str:
    """The email as its web page shows it: its links to the reader's preferences and to
    unsubscribe lead to ``/manage`` instead. A web version's address gets shared (a
    reader posts "read today's digest"), and with it, those links gave anyone the
    reader's address, their stored data, their keywords and the erasure of their
    account; the email itself keeps them. Votes stay: they only teach the ranking."""
    base = base_url.rstrip("/")
    personal = re.compile('href="' + re.escape(base) + r'/(?:preferences|unsubscribe)/[^"]*"')
    return personal.sub(f'href="{base}/manage"', html)


async def manage(request: Request) -> Response:
    """Where a web version's "Manage preferences" and "Unsubscribe" lead."""
    return web_of(request).message(
        request, "Your subscription's own links",
        "Each email we send you ends with links to your preferences and to unsubscribe, "
        "made for you alone. The web version of an email leaves them out, because its "
        "address may be shared: open the email itself and use the links at its foot.")


def http_only(url: str | None) -> str:
    """A stored link as an http(s) href, or "": the one link rule (``newsletter.urls``)
    that ingest and the email apply too."""
    return safe_url(url)


def paper_url(entry: Entry) -> str:
    """Where "Read the paper" goes: its own link, else arXiv by id, else an arXiv title
    search (a page-dump paper may come with neither)."""
    if http_only(entry.url):
        return http_only(entry.url)
    if entry.arxiv_id:
        return f"https://arxiv.org/abs/{quote(entry.arxiv_id)}"
    return f"https://arxiv.org/search/?searchtype=title&query={quote(entry.title)}"


async def paper(request: Request) -> Response:
    web = web_of(request)
    entry_id = request.path_params["entry_id"]

    def load() -> Entry | None:
        with web.app.reading() as s:
            return s.get(Entry, entry_id) if len(entry_id) <= 64 else None

    entry = await run_in_threadpool(load)
    if entry is None:
        return web.error(request, 404, "Not found", "No such paper.")
    return web.page(request, "paper.html", paper=entry, paper_url=paper_url(entry),
                    code_url=http_only(entry.code_url), project_url=http_only(entry.project_url),
                    date=format_date(entry.published),
                    authors=", ".join(str(a) for a in entry.authors or []))


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return web_of(request).error(request, 404, "Not found", "No such file.")
    return FileResponse(BUNDLED / "web" / "static" / name, media_type=STATIC[name],
                        headers={"Cache-Control": "public, max-age=3600"})
