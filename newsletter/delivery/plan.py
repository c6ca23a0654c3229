"""Planning: rank every subscriber and turn the picks into jobs, one per person."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from newsletter.ranking.selection import Selection
from newsletter.render.renderer import Recipient
from newsletter.store.queries import SubscriberRow

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


def plan_jobs(selection: Selection, subscribers: Iterator[SubscriberRow],
              k: int, day: dt.date | None = None, weekly: bool = False
              ) -> Iterator[list[Job]]:
    """Rank every subscriber (chunked) and yield their jobs; empty picks are jobs too."""
    people: dict[int, SubscriberRow] = {}

    def keyed() -> Iterator[tuple[int, str]]:
        for person in subscribers:
            people[person.id] = person
            yield person.id, person.keywords

    for chunk in selection.ranker.rank(keyed(), sent=selection.sent, k=k):
        jobs = []
        for row, sub_id in enumerate(chunk.keys):
            person = people.pop(sub_id)
            picks = [selection.entries[i].id for i in chunk.picks[row] if i >= 0]
            jobs.append(Job(Recipient(sub_id, person.email, person.name, person.keywords), picks,
                            bool(chunk.trending[row]), day=day, weekly=weekly))
        yield jobs

