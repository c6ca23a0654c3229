"""Planning: rank every subscriber and turn the picks into jobs, one per person."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from newsletter.ranking.selection import Selection
from newsletter.render.renderer import Recipient

# ---- planning ----------------------------------------------------------------------


@dataclass
class Job:
    """One delivery to make."""

    recipient: Recipient
    entry_ids: list[str]
    trending: bool
    delivery_id: int | None = None
    attempts: int = 0


@dataclass
class PlanReport:
    planned: int = 0
    skipped: int = 0
    already: int = 0


def plan_jobs(selection: Selection, subscribers: Iterator[tuple[int, str, str, str]],
              k: int) -> Iterator[list[Job]]:
    """Rank every subscriber (chunked) and yield their jobs; empty picks are jobs too."""
    people: dict[int, tuple[str, str, str]] = {}

    def keyed() -> Iterator[tuple[int, str]]:
        for sub_id, email, name, keywords in subscribers:
            people[sub_id] = (email, name, keywords)
            yield sub_id, keywords

    for chunk in selection.ranker.rank(keyed(), sent=selection.sent, k=k):
        jobs = []
        for row, sub_id in enumerate(chunk.keys):
            email, name, keywords = people.pop(sub_id)
            picks = [selection.entries[i].id for i in chunk.picks[row] if i >= 0]
            jobs.append(Job(Recipient(sub_id, email, name, keywords), picks,
                            bool(chunk.trending[row])))
        yield jobs


def slot_filter(day: dt.date, utc_hour: int, zones: Sequence[str]) -> list[tuple[str, int]]:
    """(time zone, local hour) pairs that are ``utc_hour`` UTC on ``day``: the subscribers
    whose send hour falls in this slot."""
    from zoneinfo import ZoneInfo

    moment = dt.datetime(day.year, day.month, day.day, utc_hour, tzinfo=dt.UTC)
    return [(tz, moment.astimezone(ZoneInfo(tz)).hour) for tz in zones]


