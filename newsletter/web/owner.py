"""What only the owner of an address may do: download everything stored about them,
and erase it.

Every digest ends with its reader's preferences link, and digests get forwarded. A
forwarded link may unsubscribe and change preferences (RFC 8058's one click needs
no more, and it is what every list does), but a copy of someone's stored data and
an erasure that cannot be undone ask for proof that the requester holds the
mailbox. So the preferences page only asks: its POST emails a link to the address
on file (``service.subscribers.request_mailbox_link``, at most as often as a
sign-up's confirmation), signed for "data" or "erase" rather than "preferences",
bound to the subscriber's link nonce like every link, and stamped with the hour it
was issued, so it works for ``[web] mailbox_link_hours``. Opening the data link
downloads the JSON; the erase link opens the page whose POST erases.

The old entry points (``/preferences/{token}/data`` and ``/erase``) stay: their GET
shows the page that offers to email the link, their POST emails it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.errors import NewsletterError
from newsletter.service import subscribers
from newsletter.service.subscribers import MAILBOX_LINK_SENT, Mailbox, NotFound, Unreachable
from newsletter.store.db import checkpoint
from newsletter.store.tokens import Holder
from newsletter.web.context import Web, now_hours, web_of
from newsletter.web.forms import held, posted_form, signed_claims, token_values
from newsletter.web.pages import _apply, _load
from newsletter.web.signup import send_email

log = logging.getLogger("newsletter.web")

# What each emailed link is for, in the words of its pages.
WHAT = {"data": "download your data", "erase": "delete everything"}
GONE = ("Not found", "This subscription no longer exists.")


# ---- asking, from the preferences page --------------------------------------------------

async def ask_data(request: Request) -> Response:
    """``/preferences/{token}/data``: offer (GET) or email (POST) the download link."""
    return await _ask(request, "data")


async def ask_erase(request: Request) -> Response:
    """``/preferences/{token}/erase``: offer (GET) or email (POST) the erasure link."""
    return await _ask(request, "erase")


def _reserve(web: Web, sub_id: int, purpose: str) -> Mailbox | None:
    with web.app.session() as s:
        return subscribers.request_mailbox_link(s, sub_id, purpose, web.settings.web)


def _release(web: Web, sub_id: int) -> None:
    with web.app.session() as s:
        subscribers.release_confirmation(s, sub_id, MAILBOX_LINK_SENT)


async def _ask(request: Request, purpose: str) -> Response:
    web = web_of(request)
    who = await token_values(web, request, "preferences")
    if isinstance(who, Response):
        return who
    prefs = web.links.preferences(who.id, nonce=who.nonce)
    hours = web.settings.web.mailbox_link_hours
    if request.method != "POST":
        sub = await run_in_threadpool(_load, web, who.id)
        if sub is None:
            return web.error(request, 404, *GONE)
        return web.page(request, "mailbox.html", purpose=purpose, what=WHAT[purpose],
                        email=sub.email, hours=hours, preferences=prefs)
    form = await posted_form(request, web)
    if isinstance(form, Response):
        return form
    try:
        box = await run_in_threadpool(_reserve, web, who.id, purpose)
    except NotFound:
        return web.error(request, 404, *GONE)
    except Unreachable as exc:
        return web.error(request, 409, "Not sent",
                         f"We cannot email a link: {exc.message}. Write to "
                         f"{web.settings.sender.from_address} to {WHAT[purpose]}.")
    if box is None:
        return web.error(request, 429, "Already sent",
                         "A link was emailed to this subscription's address a short while "
                         "ago: look for it there (and in spam). Another can be sent later.")
    try:
        await send_email(web.app, web.email_templates, "mailbox_link", box.email,
                         f"{purpose}.{box.id}", {
                             "link": web.links.mailbox_link(purpose, box.id, nonce=box.nonce),
                             "hours": hours, "purpose": purpose})
    except Exception as exc:
        # Not sent: the address's limit is not used up by our failure.
        await run_in_threadpool(_release, web, box.id)
        if not isinstance(exc, NewsletterError):
            raise
        log.error("%s link to subscriber %s not sent: %s", purpose, box.id, exc)
        return web.error(request, 503, "Not sent",
                         "We could not send the email just now; please try again later.")
    return web.message(request, "Check your inbox",
                       f"A link to {WHAT[purpose]} is on its way to {box.email}. "
                       f"It works for {hours} hours.",
                       link=prefs, link_text="Back to your preferences")


# ---- the emailed links -------------------------------------------------------------------

async def _mailbox_holder(web: Web, request: Request, purpose: str) -> Holder | Response:
    """The subscriber an emailed link names: signed for ``purpose`` (a preferences
    token is refused), theirs (the link nonce), and issued within the last
    ``[web] mailbox_link_hours``."""
    claims = signed_claims(web, request, purpose)
    if isinstance(claims, Response):
        return claims
    stamp = claims.ids[1] if len(claims.ids) > 1 else None
    # Every such link was made with the subscriber's nonce and an issue hour that has
    # come: one without either was never ours to honour, key or no key.
    if claims.nonce is None or stamp is None or stamp > now_hours() + 1:
        return web.error(request, 400, "This link does not work",
                         "this link is not valid (it may have been altered)")
    who = await held(web, request, claims)
    if isinstance(who, Response):
        return who
    hours = web.settings.web.mailbox_link_hours
    if now_hours() - stamp > hours:
        return web.error(request, 400, "This link has expired",
                         f"Links to {WHAT[purpose]} work for {hours} hours. Ask for a new "
                         "one on your preferences page (the link at the foot of every email).")
    return who


def _export(web: Web, sub_id: int) -> dict[str, Any] | None:
    with web.app.reading() as s:
        return subscribers.stored_data(s, sub_id)


async def my_data(request: Request) -> Response:
    """``/data/{token}``, the emailed link: everything stored about the subscriber, as
    JSON (a download; nothing changes)."""
    web = web_of(request)
    who = await _mailbox_holder(web, request, "data")
    if isinstance(who, Response):
        return who
    data = await run_in_threadpool(_export, web, who.id)
    if data is None:
        return web.error(request, 404, *GONE)
    return Response(json.dumps(data, ensure_ascii=False, indent=2, default=str),
                    media_type="application/json", headers={
                        "Content-Disposition": 'attachment; filename="my-newsletter-data.json"',
                        "Cache-Control": "no-store"})


async def erase(request: Request) -> Response:
    """``/erase/{token}``, the emailed link: GET shows the one button, its POST erases."""
    web = web_of(request)
    who = await _mailbox_holder(web, request, "erase")
    if isinstance(who, Response):
        return who
    sub_id = who.id
    if request.method != "POST":
        sub = await run_in_threadpool(_load, web, sub_id)
        if sub is None:
            return web.message(request, "Deleted", "Nothing is stored about this address.")
        return web.page(request, "erase.html", email=sub.email,
                        preferences=web.links.preferences(sub_id, nonce=who.nonce))
    form = await posted_form(request, web)
    if isinstance(form, Response):
        return form

    await run_in_threadpool(_apply, web, subscribers.erase, sub_id)
    # Committed: now out of SQLite's write-ahead log too (secure_delete zeroed the rows).
    if not await run_in_threadpool(checkpoint, web.app.engine):
        log.warning("erasure: the write-ahead log was busy; it empties at the next checkpoint")
    # Not "it cannot be added again": the kept hash stops imports and operators, and the
    # owner's own confirmed sign-up lifts it (``service.subscribers.confirm``).
    return web.message(request, "Deleted",
                       "Everything about your address is deleted. No import or operator can add it "
                       "again; it comes back only if you sign up again and confirm from your "
                       "mailbox.")
