"""The subscriber-facing web: sign-up, confirm, one-click unsubscribe, preferences
and self-service, view in browser, paper pages, and the bounce/complaint webhooks.
Links carry signed tokens; see ``app`` for the wiring."""

from newsletter.web.app import ROUTES, create_app

__all__ = ["ROUTES", "create_app"]
