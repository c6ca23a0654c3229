"""When a message refused for now is tried again, and when it stops being tried.

A temporary refusal (a 4xx reply, a timeout, a connection dropped during the
message) says nothing about the address: greylisting alone refuses every first
message from a new sender for minutes. So the row is deferred, as an MTA keeps a
message in its queue: tried again ``[delivery] retry_first_minutes`` after the
first refusal, the wait doubling with every try after, until ``retry_hours`` after
the first try; the first refusal after that fails it with the last reason.

Pure functions over explicit times: the tests drive them with a clock of their own.
"""

from __future__ import annotations

import datetime as dt

from newsletter.config import DeliveryConfig

MAX_DOUBLINGS = 20  # beyond this the wait is longer than any retry_hours allows


def deadline(cfg: DeliveryConfig, first_try: dt.datetime) -> dt.datetime:
    """The moment after which a deferred row is no longer tried again."""
    return first_try + dt.timedelta(hours=cfg.retry_hours)


def next_try(cfg: DeliveryConfig, first_try: dt.datetime, tries: int,
             now: dt.datetime) -> dt.datetime | None:
    """When to try again after the ``tries``-th temporary refusal (1 for the first),
    at ``now``; None when ``retry_hours`` since ``first_try`` have passed (give up).

    The last wait is cut at the deadline, so a row is always tried once more at the
    end of its window rather than failed without that try."""
    end = deadline(cfg, first_try)
    if now >= end:
        return None
    doublings = min(max(tries - 1, 0), MAX_DOUBLINGS)
    wait = dt.timedelta(minutes=cfg.retry_first_minutes * 2 ** doublings)
    return min(now + wait, end)
