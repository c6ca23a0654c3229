"""Transports: one module per way of handing mail over, behind ``base.Transport``.

The registry below is the one place that names them: adding an email API is a new
module (a ``HttpApiTransport`` subclass) plus one line here, and the backend name
in ``[transport] backend``. Modules are imported only when their backend is used.
"""

from __future__ import annotations

import importlib

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.transports.base import Transport

REGISTRY: dict[str, str] = {  # [transport] backend → "module:Class"
    "outbox": "newsletter.transports.outbox:OutboxTransport",
    "console": "newsletter.transports.console:ConsoleTransport",
    "smtp": "newsletter.transports.smtp:SmtpTransport",
    "sendgrid": "newsletter.transports.sendgrid:SendGridTransport",
    "mailgun": "newsletter.transports.mailgun:MailgunTransport",
    "postmark": "newsletter.transports.postmark:PostmarkTransport",
    "ses": "newsletter.transports.ses:SesTransport",
    "resend": "newsletter.transports.resend:ResendTransport",
}


def transport_class(backend: str) -> type[Transport]:
    """The class registered for ``backend``."""
    try:
        module, _, name = REGISTRY[backend].partition(":")
    except KeyError:
        raise ConfigError(f"[transport] backend: unknown {backend!r} "
                          f"(expected one of {', '.join(REGISTRY)})") from None
    cls: type[Transport] = getattr(importlib.import_module(module), name)
    return cls


def make_transport(settings: Settings) -> Transport:
    """The transport ``[transport] backend`` names, given its own section alone (the
    one place that maps backends to sections); a missing setting (an API key) is a
    ConfigError here, before anything is planned."""
    cls = transport_class(settings.transport.backend)
    section = getattr(settings, cls.config_section) if cls.config_section else None
    return cls.from_config(section)


__all__ = ["REGISTRY", "Transport", "make_transport", "transport_class"]
