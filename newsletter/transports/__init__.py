"""Transports: one module per way of handing mail over, behind ``base.Transport``."""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.transports.base import Transport


def make_transport(settings: Settings) -> Transport:
    """The transport ``[transport] backend`` names, configured."""
    backend = settings.transport.backend
    if backend == "outbox":
        from newsletter.transports.outbox import OutboxTransport

        return OutboxTransport(settings.outbox.path)
    if backend == "console":
        from newsletter.transports.console import ConsoleTransport

        return ConsoleTransport()
    if backend == "smtp":
        from newsletter.transports.smtp import SmtpTransport

        return SmtpTransport(settings.smtp)
    from newsletter.transports.http_api import PROVIDERS

    try:
        return PROVIDERS[backend](settings.api)
    except KeyError:  # pragma: no cover - the config type lists the backends
        raise ConfigError(f"[transport] backend: unknown {backend!r}") from None


__all__ = ["Transport", "make_transport"]
