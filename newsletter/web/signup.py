"""Sign-up work done after the answer is sent.

The page a visitor sees (and how long it takes) must not tell whether an address
was new, pending or already subscribed, so the handler only validates and then
hands the rest to a background task: the sign-up itself (``service.subscribers.
sign_up``: the database upsert and the per-address limits, at most one confirmation
per ``confirm_interval_minutes`` and ``confirms_per_day`` a day, counted from the
events table so every process and a restart agree), then the email. A failed send is
logged with the reason, never dropped silently.

``send_email`` is how the web sends any email of its own (this confirmation, the
data and erasure links of ``web.owner``): one message, at once, through the
configured transport.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool

from newsletter.app import App
from newsletter.errors import NewsletterError
from newsletter.render.compile import BUNDLED
from newsletter.render.links import LinkMaker
from newsletter.service import subscribers
from newsletter.service.subscribers import SignUp
from newsletter.store.models import utcnow

log = logging.getLogger("newsletter.web.signup")


def email_templates(configured: str | None) -> jinja2.Environment:
    """The confirmation email's templates: the operator's copy first, then bundled."""
    loaders: list[jinja2.BaseLoader] = []
    if configured:
        loaders.append(jinja2.FileSystemLoader(str(Path(configured))))
    loaders.append(jinja2.FileSystemLoader(str(BUNDLED)))
    return jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=jinja2.
                              select_autoescape(["html"]), keep_trailing_newline=True)


def _reserve(app: App, form: SignUp) -> subscribers.Reserved | None:
    with app.session() as s:
        return subscribers.sign_up(s, form, app.settings.web)


def _release(app: App, sub_id: int) -> None:
    with app.session() as s:
        subscribers.release_confirmation(s, sub_id)


async def process(app: App, links: LinkMaker, templates: jinja2.Environment,
                  form: SignUp) -> None:
    """The background half of a sign-up. Never raises: errors are logged."""
    reserved = None
    try:
        reserved = await run_in_threadpool(_reserve, app, form)
        if reserved is not None:
            await send_confirmation(app, links, templates, reserved.id, form.address,
                                    nonce=reserved.nonce, change=reserved.change)
            return
    except NewsletterError as exc:
        log.error("confirmation email to subscriber failed: %s", exc)
    except Exception:  # noqa: BLE001 - a background task has nobody else to tell
        log.exception("sign-up processing failed")
    if reserved is not None:  # not sent: the address's limit is not used up by our failure
        try:
            await run_in_threadpool(_release, app, reserved.id)
        except Exception:  # noqa: BLE001
            log.exception("giving back the confirmation slot failed")


async def send_confirmation(app: App, links: LinkMaker, templates: jinja2.Environment,
                            sub_id: int, address: str, *, nonce: int | None = None,
                            change: int | None = None) -> None:
    await send_email(app, templates, "confirm", address, f"confirm.{sub_id}", {
        "link": links.confirm(sub_id, nonce=nonce, change=change),
        "hours": app.settings.web.confirm_hours})


async def send_email(app: App, templates: jinja2.Environment, name: str, address: str,
                     tag: str, context: dict[str, Any]) -> None:
    """One short email the web sends to one address at once, outside the ledger (a
    sign-up's confirmation, an emailed data or erasure link): ``<name>_subject.txt``,
    ``<name>.txt`` and ``<name>.html`` rendered with ``context`` and the sender, from
    the configured sender through the configured transport. ``tag`` starts its
    Message-ID. Raises what the transport raises."""
    from newsletter.render.mime import MimeBuilder
    from newsletter.transports import make_transport

    settings = app.settings
    context = {"sender": settings.sender} | context
    subject = templates.get_template(f"{name}_subject.txt").render(context).strip()
    text = templates.get_template(f"{name}.txt").render(context)
    html = templates.get_template(f"{name}.html").render(context)
    builder = MimeBuilder(settings.sender)
    msg = builder.build(to=address, to_name="", subject=subject, text=text, html=html,
                        message_id=builder.message_id(f"{tag}.{utcnow():%Y%m%d%H%M%S%f}"),
                        list_unsubscribe=f"<mailto:{settings.sender.from_address}>")
    transport = make_transport(settings)
    await transport.open()
    try:
        await transport.send(msg)
    finally:
        await transport.close()
