"""Starlette app for the links in every email and the sign-up form.

* ``POST /unsubscribe/{token}`` is RFC 8058 one-click: mail clients post
  ``List-Unsubscribe=One-Click`` there with no page in between. ``GET`` shows a
  page with one button (link scanners that prefetch GETs unsubscribe nobody).
* Sign-ups are pending until the address confirms (double opt-in); operator
  imports are active at once.
* The preferences page shows what the subscriber's keywords pick, through the
  same ranking code as ``newsletter rank`` and the preview.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import escape
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter.app import App
from newsletter.errors import InputError, NewsletterError
from newsletter.render.compile import BUNDLED
from newsletter.render.links import Signer, secret_keys
from newsletter.store.models import Delivery, Edition, Entry, Event, Subscriber, utcnow
from newsletter.store.subscribers import add as add_subscriber
from newsletter.store.subscribers import check_hour, check_keywords, check_tz, normalize_email
from newsletter.web.feedback import feedback_routes, preferences_context


def create_app(app: App) -> Starlette:
    settings = app.settings
    directory = Path(settings.render.templates) if settings.render.templates else BUNDLED
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(directory / "web")),
                             autoescape=True)
    with app.session() as s:
        signer = Signer(secret_keys(settings, s))
    base = settings.web.base_url.rstrip("/")
    sender = {"from_name": settings.sender.from_name}

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(sender=sender, base=base, **context)
        return HTMLResponse(html, status_code=status)

    def message(heading: str, text: str, status: int = 200, **kw: Any) -> HTMLResponse:
        return page("message.html", status, heading=heading, text=text, **kw)

    def subscriber_for(purpose: str, token: str) -> tuple[int, list[int]]:
        values = signer.verify(purpose, token)
        return values[0], values[1:]

    def bad_link(exc: InputError) -> HTMLResponse:
        return message("This link does not work", exc.message, 400)

    async def home(request: Request) -> Response:
        return page("subscribe.html", email="", keywords="", error="")

    async def subscribe(request: Request) -> Response:
        form = await request.form()
        email, keywords = str(form.get("email", "")), str(form.get("keywords", ""))
        try:
            address = normalize_email(email)
            check_keywords(keywords)
        except InputError as exc:
            return page("subscribe.html", 400, email=email, keywords=keywords, error=exc.message)
        with app.session() as s:
            sub = s.scalar(select(Subscriber).where(Subscriber.email == address))
            if sub is None:
                sub = add_subscriber(s, address, keywords=keywords, status="pending",
                                     source="web")
            elif sub.status in ("unsubscribed", "pending"):
                sub.status, sub.keywords = "pending", keywords.strip()
            send_confirmation = sub.status == "pending"
            sub_id = sub.id
        if send_confirmation:
            await _send_confirmation(app, signer, sub_id, address)
        # The same answer whether or not the address was known: no address probing.
        return message("Check your inbox", f"We sent a confirmation link to {address}. "
                       "Your subscription starts when you follow it.")

    async def confirm(request: Request) -> Response:
        try:
            sub_id, _ = subscriber_for("confirm", request.path_params["token"])
        except InputError as exc:
            return bad_link(exc)
        with app.session() as s:
            sub = s.get(Subscriber, sub_id)
            if sub is None:
                return message("Not found", "This subscription no longer exists.", 404)
            if sub.status == "pending":
                sub.status, sub.consent_at, sub.consent_source = "active", utcnow(), "web"
                s.add(Event(subscriber_id=sub.id, kind="confirmed"))
            email = sub.email
        prefs = f"{base}/preferences/{signer.token('preferences', sub_id)}"
        return message("You are subscribed", f"{email} will get the next edition.",
                       link=prefs, link_text="Tune your keywords")

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            sub_id, _ = subscriber_for("unsubscribe", token)
        except InputError as exc:
            return bad_link(exc)
        with app.session() as s:
            sub = s.get(Subscriber, sub_id)
            if sub is None:
                return message("Unsubscribed", "This address gets no more emails.")
            if request.method == "GET":
                return page("unsubscribe.html", email=sub.email, preferences=(
                    f"{base}/preferences/{signer.token('preferences', sub_id)}"))
            if sub.status != "unsubscribed":
                sub.status = "unsubscribed"
                s.add(Event(subscriber_id=sub.id, kind="unsubscribed",
                            detail={"one_click": request.headers.get("content-type", "")
                                    .startswith("application/x-www-form-urlencoded")}))
            email = sub.email
        return message("Unsubscribed", f"{email} will get no more emails from us.")

    async def preferences(request: Request) -> Response:
        try:
            sub_id, _ = subscriber_for("preferences", request.path_params["token"])
        except InputError as exc:
            return bad_link(exc)
        error, saved = "", False
        keywords = None
        if request.method == "POST":
            form = await request.form()
            keywords = str(form.get("keywords", ""))
            try:
                values = {"keywords": check_keywords(keywords),
                          "tz": check_tz(str(form.get("tz", "UTC"))),
                          "send_hour": check_hour(str(form.get("hour", "7"))),
                          "status": str(form.get("status", "active"))}
                if values["status"] not in ("active", "paused"):
                    raise InputError("delivery must be daily or paused")
            except InputError as exc:
                error = exc.message
            else:
                with app.session() as s:
                    sub = s.get(Subscriber, sub_id)
                    if sub is not None and sub.status in ("active", "paused"):
                        for k, v in values.items():
                            setattr(sub, k, v)
                        s.add(Event(subscriber_id=sub_id, kind="preferences"))
                        saved = True
        from newsletter.ranking.view import rank_subscribers

        with app.session() as s:
            sub = s.get(Subscriber, sub_id)
            if sub is None:
                return message("Not found", "This subscription no longer exists.", 404)
            picks: list[dict[str, Any]] = []
            if not error and sub.keywords.strip():
                for r in rank_subscribers(settings, s, email=sub.email, limit=5,
                                          all_entries=True):
                    picks = r["picks"]
            return page("preferences.html", 400 if error else 200, sub=sub,
                        keywords=sub.keywords if keywords is None else keywords, error=error,
                        saved=saved, picks=picks,
                        unsubscribe=f"{base}/unsubscribe/{signer.token('unsubscribe', sub_id)}",
                        **preferences_context(app, s, sub, signer, base))

    async def view(request: Request) -> Response:
        try:
            sub_id, rest = subscriber_for("view", request.path_params["token"])
        except InputError as exc:
            return bad_link(exc)
        edition_id = rest[0] if rest else 0
        from newsletter.delivery.edition import open_edition
        from newsletter.delivery.plan import Job
        from newsletter.render.renderer import Recipient

        with app.session() as s:
            row = s.scalar(select(Delivery).where(Delivery.edition_id == edition_id,
                                                  Delivery.subscriber_id == sub_id))
            edition = s.get(Edition, edition_id)
            sub = s.get(Subscriber, sub_id)
            if row is None or edition is None or sub is None:
                return message("Not available", "This email is no longer available.", 404)
            entries = list(s.scalars(select(Entry).where(Entry.id.in_(row.entry_ids))))
            ctx = open_edition(settings, s, edition, entries)
            job = Job(Recipient(sub.id, sub.email, sub.name, sub.keywords), list(row.entry_ids),
                      bool((row.details or {}).get("trending")))
            return HTMLResponse(ctx.render(job).html)

    async def paper(request: Request) -> Response:
        with app.session() as s:
            entry = s.get(Entry, request.path_params["entry_id"])
            if entry is None:
                return message("Not found", "No such paper.", 404)
            return page("paper.html", paper=entry)

    async def webhook(request: Request) -> Response:
        from newsletter.web.webhooks import PARSERS

        provider = request.path_params["provider"]
        parser = PARSERS.get(provider)
        try:
            if parser is None or signer.verify("webhook", request.path_params["token"]) != [0]:
                raise InputError("unknown webhook")
        except InputError:
            return Response("unknown webhook", status_code=404)
        try:
            notices = list(parser(await request.json()))
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            return Response(f"unreadable {provider} notification: {exc}", status_code=400)
        changed = 0
        with app.session() as s:
            for address, kind in notices:
                try:
                    normalized = normalize_email(address)
                except InputError:
                    continue
                sub = s.scalar(select(Subscriber).where(Subscriber.email == normalized))
                if sub is None:
                    continue
                if kind == "bounce":
                    sub.bounce_count += 1
                    sub.status = "bounced"
                else:
                    sub.status = "complained"
                s.add(Event(subscriber_id=sub.id, kind="bounced" if kind == "bounce"
                            else "complained", detail={"provider": provider}))
                changed += 1
        return Response(f"{changed} subscribers updated", status_code=200)

    routes = [
        Route("/", home),
        Route("/subscribe", subscribe, methods=["POST"]),
        Route("/confirm/{token}", confirm),
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", preferences, methods=["GET", "POST"]),
        Route("/view/{token}", view),
        Route("/papers/{entry_id:path}", paper),
        Route("/webhooks/{provider}/{token}", webhook, methods=["POST"]),
        *feedback_routes(app, page=page, message=message, signer=signer, base=base),
    ]
    return Starlette(routes=routes)


async def _send_confirmation(app: App, signer: Signer, sub_id: int, address: str) -> None:
    """A plain confirmation email through the configured transport."""
    from newsletter.render.mime import MimeBuilder
    from newsletter.transports import make_transport

    settings = app.settings
    link = f"{settings.web.base_url.rstrip('/')}/confirm/{signer.token('confirm', sub_id)}"
    name = settings.sender.from_name
    text = (f"Please confirm your subscription to {name}:\n{link}\n\n"
            "If you did not ask for this, ignore this email and nothing will be sent.\n")
    html = (f"<p>Please confirm your subscription to {escape(name)}:</p>"
            f'<p><a href="{link}">Confirm my subscription</a></p>'
            "<p>If you did not ask for this, ignore this email.</p>")
    builder = MimeBuilder(settings)
    msg = builder.build(to=address, to_name="", subject=f"Confirm your subscription to {name}",
                        text=text, html=html, message_id=builder.message_id(
                            f"confirm.{sub_id}.{dt.date.today():%Y%m%d}"),
                        list_unsubscribe=f"<mailto:{settings.sender.from_address}>")
    transport = make_transport(settings)
    await transport.open()
    try:
        await transport.send(msg)
    except NewsletterError:
        pass  # the page still says to check the inbox; the operator sees it in the log
    finally:
        await transport.close()
