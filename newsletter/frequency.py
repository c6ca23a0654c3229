"""How often a subscriber gets an email: ``daily`` (the default), ``weekdays``
(Monday to Friday of their local calendar) or ``weekly`` on one weekday, stored as
``weekly:mon`` ... ``weekly:sun`` in ``subscribers.frequency``.

A weekly email is the week's best for that person: ranked over the papers of the
last seven days, never one already sent to them. A weekdays subscriber's Monday email
is ranked over the papers since their Friday one (``GAP_DAYS``): the weekend's papers
are theirs too, where a daily reader sharing their hour had them on Saturday and
Sunday. Which days a subscriber is due is decided here, once, for planning, the forms
and the console alike.
"""

from __future__ import annotations

import datetime as dt

from newsletter.errors import InputError

DAILY, WEEKDAYS, WEEKLY = "daily", "weekdays", "weekly"
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEKDAY_KEYS = tuple(n[:3] for n in WEEKDAY_NAMES)
CHOICES = (DAILY, WEEKDAYS, *(f"{WEEKLY}:{k}" for k in WEEKDAY_KEYS))
WEEK_DAYS = 7  # a weekly email's papers: those of the last seven days
GAP_DAYS = 3  # a weekdays subscriber's Monday email: the papers since Friday's


def check_frequency(value: str | None) -> str:
    """The stored form of what a person or operator typed: ``daily``, ``weekdays``,
    ``weekly`` (Monday), ``weekly:fri``, ``weekly:friday`` or ``weekly-friday``."""
    raw = (value or "").strip().lower()
    if raw in ("", DAILY):
        return DAILY
    if raw == WEEKDAYS:
        return WEEKDAYS
    kind, _, day = raw.replace("-", ":").replace(" ", ":").partition(":")
    if kind == WEEKLY:
        day = day or "mon"
        for key, name in zip(WEEKDAY_KEYS, WEEKDAY_NAMES, strict=True):
            if day in (key, name):
                return f"{WEEKLY}:{key}"
        raise InputError(f"invalid weekday {day!r} in frequency {value!r}: expected one "
                         f"of {', '.join(WEEKDAY_KEYS)}")
    raise InputError(f"invalid frequency {value!r}: expected daily, weekdays or "
                     "weekly:<weekday> (e.g. weekly:fri)")


def due_on(day: dt.date) -> list[str]:
    """The stored frequencies that get an email on their local ``day``."""
    due = [DAILY, f"{WEEKLY}:{WEEKDAY_KEYS[day.weekday()]}"]
    if day.weekday() < 5:
        due.append(WEEKDAYS)
    return due


def after_gap(day: dt.date) -> bool:
    """Whether ``day`` is a weekdays subscriber's first day after days without an
    email (a Monday): their email of that day covers the weekend too."""
    return day.weekday() == 0


def kind_on(frequency: str, day: dt.date) -> tuple[bool, bool]:
    """(weekly, gap) of a subscriber's email on their local ``day``: the week's best,
    or a weekdays Monday's over the papers since Friday's (``planning.KINDS``)."""
    return is_weekly(frequency), frequency == WEEKDAYS and after_gap(day)


def is_weekly(frequency: str) -> bool:
    return frequency.startswith(WEEKLY)


def describe(frequency: str) -> str:
    """For people: "daily", "on weekdays", "weekly on Friday"."""
    if is_weekly(frequency):
        key = frequency.partition(":")[2] or "mon"
        return f"weekly on {WEEKDAY_NAMES[WEEKDAY_KEYS.index(key)].capitalize()}"
    return "on weekdays" if frequency == WEEKDAYS else DAILY
