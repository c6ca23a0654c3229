"""Retry timing shared by every stage that talks to a server: ingest's HTTP fetches,
the email-API transports and delivery's retries of transient failures."""

from __future__ import annotations

import email.utils
import random
import time

MAX_RETRY_AFTER = 120.0


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def backoff_delay(attempt: int, base: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, or the server's Retry-After when given."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    return random.uniform(0, base * (2 ** attempt))
