"""Bounce and complaint webhooks, one verifier per email API.

``/webhooks/<provider>/<token>``: the token is a random secret per provider,
stored in the database (``meta``), shown only by ``newsletter webhooks urls`` and
replaced by ``newsletter webhooks rotate PROVIDER``. The provider's own proof is
checked on top (see each module). A new provider: a module with one ``Verifier``
subclass and one line in ``VERIFIERS``.
"""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.errors import InputError
from newsletter.store.models import Meta
from newsletter.web.webhooks.base import (
    Fetcher,
    Notice,
    Rejected,
    Verifier,
    WebhookRequest,
)
from newsletter.web.webhooks.generic import Generic
from newsletter.web.webhooks.mailgun import Mailgun
from newsletter.web.webhooks.postmark import Postmark
from newsletter.web.webhooks.resend import Resend
from newsletter.web.webhooks.sendgrid import SendGrid
from newsletter.web.webhooks.ses import Ses

VERIFIERS: dict[str, type[Verifier]] = {
    v.name: v for v in (SendGrid, Mailgun, Postmark, Resend, Ses, Generic)
}

__all__ = ["VERIFIERS", "Fetcher", "Notice", "Rejected", "Verifier",
           "WebhookRequest", "rotate_token", "webhook_tokens", "webhook_urls"]


def _key(provider: str) -> str:
    return f"webhook_token:{provider}"


def webhook_tokens(session: Session, *, create: bool = True) -> dict[str, str]:
    """provider → its URL token; missing ones are made (once) when ``create``."""
    out: dict[str, str] = {}
    for provider in VERIFIERS:
        row = session.get(Meta, _key(provider))
        if row is None and create:
            row = Meta(key=_key(provider), value=secrets.token_urlsafe(24))
            session.add(row)
            session.flush()
        if row is not None:
            out[provider] = row.value
    return out


def rotate_token(session: Session, provider: str) -> str:
    """A new token for ``provider``; the old URL stops working at once."""
    if provider not in VERIFIERS:
        raise InputError(f"unknown provider {provider!r}: expected one of "
                         f"{', '.join(VERIFIERS)}")
    row = session.get(Meta, _key(provider))
    value = secrets.token_urlsafe(24)
    if row is None:
        session.add(Meta(key=_key(provider), value=value))
    else:
        row.value = value
    return value


def webhook_urls(settings: Settings, session: Session) -> dict[str, str]:
    from newsletter.render.links import LinkMaker, Signer
    from newsletter.store.keys import secret_keys

    links = LinkMaker(settings.web, settings.sender, Signer(secret_keys(settings.web, session)))
    return {p: links.webhook(p, t) for p, t in webhook_tokens(session).items()}
