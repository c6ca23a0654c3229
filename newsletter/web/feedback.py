"""The pages behind "more like this" / "less like this", and the preferences page's
"what your votes taught us" block.

* ``GET /feedback/{up|down}/{token}/{paper}`` shows one button; only its ``POST``
  votes, so a link scanner that prefetches every link in an email votes nothing
  (``HEAD`` and ``GET`` never change state). The token is signed for this subscriber
  *and* this paper (``Signer.paper_token``).
* ``POST /feedback/{undo|forget|reset}/{preferences token}``: undo one vote, remove
  one learned term, reset all learning; each then shows the preferences page again.

The app registers these with ``feedback_routes``, handing over its page helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from newsletter.app import App
from newsletter.errors import InputError
from newsletter.ranking.view import cast_vote, learned_terms
from newsletter.render.links import Signer
from newsletter.store import votes as votes_mod
from newsletter.store.models import Entry, Subscriber

Page = Callable[..., Response]


def preferences_context(app: App, session: Any, sub: Subscriber, signer: Signer,
                        base: str) -> dict[str, Any]:
    """What the preferences page shows of learning: learned terms, votes, form URLs."""
    token = signer.token("preferences", sub.id)
    votes = [{"paper_id": e.id, "title": e.title, "direction": v.direction}
             for v, e in votes_mod.votes_of(session, sub.id)]
    learned = learned_terms(app.settings, session, sub) if votes else []
    return {"learned": learned, "votes": votes, "feedback_links": {
        action: f"{base}/feedback/{action}/{token}" for action in ("undo", "forget", "reset")}}


def feedback_routes(app: App, *, page: Page, message: Page, signer: Signer,
                    base: str) -> list[Route]:
    def bad_link(exc: InputError) -> Response:
        return message("This link does not work", exc.message, 400)

    def preferences_url(sub_id: int) -> str:
        return f"{base}/preferences/{signer.token('preferences', sub_id)}"

    async def vote(request: Request) -> Response:
        direction = request.path_params["direction"]
        paper_id = request.path_params["paper"]
        try:
            if direction not in ("up", "down"):
                raise InputError("unknown vote")
            sub_id = signer.verify_paper("vote", request.path_params["token"], paper_id)
        except InputError as exc:
            return bad_link(exc)
        with app.session() as s:
            sub = s.get(Subscriber, sub_id)
            entry = s.get(Entry, paper_id)
            if sub is None or entry is None:
                return message("Not found", "This paper or subscription no longer exists.",
                               404)
            if request.method != "POST":  # GET and HEAD show the button, never vote
                return page("feedback.html", direction=direction, paper=entry,
                            email=sub.email)
            outcome = cast_vote(app.settings, s, None, paper_id,
                                1 if direction == "up" else -1, source="email",
                                subscriber_id=sub_id)
        return message("Thank you", outcome.message, link=preferences_url(sub_id),
                       link_text="See what we learned, or undo it")

    async def manage(request: Request) -> Response:
        action = request.path_params["action"]
        try:
            sub_id = signer.verify("preferences", request.path_params["token"])[0]
        except InputError as exc:
            return bad_link(exc)
        form = await request.form()
        with app.session() as s:
            if s.get(Subscriber, sub_id) is None:
                return message("Not found", "This subscription no longer exists.", 404)
            if action == "undo":
                votes_mod.undo(s, sub_id, str(form.get("paper", "")))
            elif action == "forget":
                try:
                    votes_mod.mute(s, sub_id, str(form.get("term", "")),
                                   str(form.get("label", "")))
                except InputError as exc:
                    return message("Nothing removed", exc.message, 400)
            elif action == "reset":
                votes_mod.reset(s, sub_id)
            else:
                return message("Not found", "No such page.", 404)
        return RedirectResponse(preferences_url(sub_id) + "#learned", status_code=303)

    return [
        Route("/feedback/{direction}/{token}/{paper:path}", vote, methods=["GET", "POST"]),
        Route("/feedback/{action}/{token}", manage, methods=["POST"]),
    ]
