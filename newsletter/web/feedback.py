"""The pages behind "more like this" / "less like this", and the preferences page's
"what your votes taught us" block.

* ``GET /feedback/{up|down}/{token}/{paper}`` shows one button; only its ``POST``
  votes, so a link scanner that prefetches every link in an email votes nothing
  (``HEAD`` and ``GET`` never change state). The token is signed for this subscriber
  *and* this paper (``Signer.paper_token``).
* ``POST /feedback/{undo|forget|reset}/{preferences token}``: undo one vote, remove
  one learned term, reset all learning; each then shows the preferences page again.

Every POST carries the site's CSRF token, like every other form here.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.errors import InputError
from newsletter.service import votes
from newsletter.store import votes as votes_mod
from newsletter.store.lifecycle import RECEIVING
from newsletter.store.models import Entry, Subscriber
from newsletter.web.context import Web, status_label, web_of
from newsletter.web.forms import posted_form, token_values


def preferences_context(web: Web, sub_id: int, nonce: int | None) -> dict[str, Any]:
    """What the preferences page shows of votes: each vote, and the forms' URLs (the
    learned terms are ranking work: ``Web.learned``, off the server's process)."""
    base = web.settings.web.base_url.rstrip("/")
    token = web.signer.token("preferences", sub_id, nonce=nonce)
    links = {action: f"{base}/feedback/{action}/{token}"
             for action in ("undo", "forget", "reset")}
    with web.app.reading() as s:
        votes = [{"paper_id": e.id, "title": e.title, "direction": v.direction}
                 for v, e in votes_mod.votes_of(s, sub_id)]
    return {"votes": votes, "feedback_links": links}


async def vote(request: Request) -> Response:
    web = web_of(request)
    direction = request.path_params["direction"]
    paper_id = request.path_params["paper"]
    if direction not in ("up", "down"):
        return web.error(request, 400, "This link does not work", "unknown vote")
    who = await token_values(web, request, f"vote:{paper_id}")
    if isinstance(who, Response):
        return who
    sub_id = who.id
    if request.method == "POST":
        form = await posted_form(request, web)
        if isinstance(form, Response):
            return form

    def act() -> tuple[str, Any, str]:
        with web.app.session() as s:
            sub = s.get(Subscriber, sub_id)
            entry = s.get(Entry, paper_id)
            if sub is None or entry is None:
                return "missing", None, ""
            if sub.status not in RECEIVING:
                # no email comes any more (unsubscribed, stopped): a vote would only store
                # what this person did after leaving, for a ranking nobody receives
                return "stopped", status_label(sub.status, sub.frequency), sub.email
            if request.method != "POST":  # GET and HEAD show the button, never vote
                return "ask", {"title": entry.title}, sub.email
            # only the write here: the lesson is ranking work, done after the vote's
            # transaction has ended (another writer waits for none of it)
            cast = votes.cast_vote(s, paper_id, 1 if direction == "up" else -1, by="email",
                                   subscriber_id=sub_id)
            return "voted", cast, sub.email

    state, value, email = await run_in_threadpool(act)
    if state == "voted":
        cast = value
        try:
            value = (await web.lesson(cast)).message
        except Exception:  # the vote is stored: say so, without what it taught
            value = votes.without_lesson(cast).message
    if state == "missing":
        return web.error(request, 404, "Not found",
                         "This paper or subscription no longer exists.")
    if state == "stopped":
        return web.message(request, "Not recorded",
                           f"Votes are not recorded for this address ({value}).",
                           link=web.links.preferences(sub_id, nonce=who.nonce),
                           link_text="Manage your subscription",
                           status=409 if request.method == "POST" else 200)
    if state == "ask":
        return web.page(request, "feedback.html", direction=direction, paper=value,
                        email=email)
    return web.message(request, "Thank you", str(value),
                       link=web.links.preferences(sub_id, nonce=who.nonce),
                       link_text="See what we learned, or undo it")


async def manage(request: Request) -> Response:
    web = web_of(request)
    action = request.path_params["action"]
    who = await token_values(web, request, "preferences")
    if isinstance(who, Response):
        return who
    sub_id = who.id
    form = await posted_form(request, web)
    if isinstance(form, Response):
        return form

    def act() -> str:
        with web.app.session() as s:
            if s.get(Subscriber, sub_id) is None:
                return "missing"
            if action == "undo":
                votes.undo(s, sub_id, str(form.get("paper", "")))
            elif action == "forget":
                votes.forget(s, sub_id, str(form.get("term", "")), str(form.get("label", "")))
            elif action == "reset":
                votes.reset(s, sub_id)
            else:
                return "unknown"
        return "ok"

    try:
        state = await run_in_threadpool(act)
    except InputError as exc:
        return web.message(request, "Nothing removed", exc.message, 400)
    if state != "ok":
        return web.error(request, 404, "Not found", "No such page.")
    return RedirectResponse(web.links.preferences(sub_id, nonce=who.nonce) + "#learned",
                            status_code=303)


FEEDBACK_ROUTES: list[BaseRoute] = [
    Route("/feedback/{direction}/{token}/{paper:path}", vote, methods=["GET", "POST"]),
    Route("/feedback/{action}/{token}", manage, methods=["POST"]),
]
