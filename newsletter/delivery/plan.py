"""Planning: rank every subscriber and turn the picks into jobs, one per person."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsletter.ranking.selection import Selection
from newsletter.ranking.sparse import distinct
from newsletter.render.renderer import Recipient

if TYPE_CHECKING:
    from newsletter.store.models import Delivery, Subscriber

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
    first_try: dt.datetime | None = None  # first refused for now (a deferred row's)
    # ranked over the papers since the weekdays subscriber's Friday email (a Monday's)
    gap: bool = False

    @classmethod
    def of(cls, row: Delivery, sub: Subscriber) -> Job:
        """The job a ledger row stands for, addressed as the subscriber is now."""
        return cls.stored(Recipient(sub.id, sub.email, sub.name, sub.keywords, sub.link_nonce),
                          list(row.entry_ids), row.details, row.id, row.attempts, row.day,
                          row.first_try_at)

    @classmethod
    def stored(cls, recipient: Recipient, entry_ids: list[str], details: dict[str, Any] | None,
               delivery_id: int, attempts: int, day: dt.date | None,
               first_try: dt.datetime | None) -> Job:
        """The job of a ledger row's values, its kind read from the row's ``details``
        (what ``details`` wrote)."""
        found = details or {}
        return cls(recipient, entry_ids, bool(found.get("trending")), delivery_id, attempts,
                   day=day, weekly=bool(found.get("weekly")), first_try=first_try,
                   gap=bool(found.get("gap")))

    @property
    def details(self) -> dict[str, Any]:
        """What its ledger row keeps of the job's kind: in its trending section or not,
        and the week's or the weekend's when ranked over those."""
        if self.weekly:
            return {"trending": self.trending, "weekly": True}
        if self.gap:
            return {"trending": self.trending, "gap": True}
        return {"trending": self.trending}


@dataclass
class PlanReport:
    planned: int = 0
    skipped: int = 0
    already: int = 0  # had this day's edition already (another slot, process or machine)


def plan_jobs(selection: Selection, recipients: Iterable[Recipient],
              k: int, day: dt.date | None = None, weekly: bool = False,
              papers: set[str] | None = None, gap: bool = False) -> Iterator[list[Job]]:
    """Rank every recipient (chunked) and yield their jobs; empty picks are jobs too.
    ``papers``: filled with the ids of the papers the jobs show (a chunk's picks at
    once), what delivery in several processes makes ready before it forks."""
    people: dict[int, Recipient] = {}

    def keyed() -> Iterator[tuple[int, str]]:
        for r in recipients:
            people[r.id] = r
            yield r.id, r.keywords

    for chunk in selection.ranker.rank(keyed(), sent=selection.sent, k=k):
        if papers is not None:
            picked = distinct(chunk.picks)
            papers.update(selection.entries[i].id for i in picked[picked >= 0].tolist())
        jobs = []
        for row, sub_id in enumerate(chunk.keys):
            picks = [selection.entries[i].id for i in chunk.picks[row] if i >= 0]
            jobs.append(Job(people.pop(sub_id), picks, bool(chunk.trending[row]), day=day,
                            weekly=weekly, gap=gap))
        yield jobs



def plan_now(selection: Selection, recipients: Iterable[Recipient], k: int,
             weekly: bool = False, day: dt.date | None = None, gap: bool = False
             ) -> list[Job]:
    """Every recipient's job at once (a preview's handful, not an edition)."""
    return [job for chunk in plan_jobs(selection, recipients, k, day=day, weekly=weekly,
                                       gap=gap)
            for job in chunk]
