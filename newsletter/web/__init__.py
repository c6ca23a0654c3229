"""The subscriber-facing web pages: subscribe, confirm, one-click unsubscribe,
preferences, view in browser, and a page per paper. Links carry signed tokens."""

from newsletter.web.app import create_app

__all__ = ["create_app"]
