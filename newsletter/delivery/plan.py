"""Planning: rank every subscriber and turn the picks into jobs, one per person."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
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
    day: dt.date | None = None  # the subscriber's newsletter day (None: the edition's)
    weekly: bool = False  # the week's best (``newsletter.frequency``), not one day's


@dataclass
class PlanReport:
    planned: int = 0
    skipped: int = 0
    already: int = 0  # had this day's edition already (another slot, process or machine)


def plan_jobs(selection: Selection, subscribers: Iterator[tuple[int, str, str, str]],
              k: int, day: dt.date | None = None, weekly: bool = False
              ) -> Iterator[list[Job]]:
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
                            bool(chunk.trending[row]), day=day, weekly=weekly))
        yield jobs

