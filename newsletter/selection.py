"""Which papers an edition considers, and which each subscriber already had.

An edition's candidates are the papers that *arrived* since the previous
edition (the first edition takes everything stored), not a publication-date
window: daily-papers sites feature papers whose arXiv dates are months old.
Papers already sent to a subscriber are excluded per subscriber by the ranker.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import Settings
from .models import Edition, Entry, SentEntry
from .ranking import Corpus, RankEntry, Ranker
from .text import Acronyms


def candidate_entries(session: Session, *, since: dt.datetime | None,
                      until: dt.datetime | None = None) -> list[Entry]:
    q = select(Entry)
    if since is not None:
        q = q.where(Entry.arrived_at > since)
    if until is not None:
        q = q.where(Entry.arrived_at <= until)
    return list(session.scalars(q.order_by(Entry.arrived_at, Entry.id)))


def edition_entries(session: Session, slot: str, cutoff: dt.datetime) -> list[Entry]:
    """Papers that arrived after the previous edition of ``slot``, up to ``cutoff``: an
    edition's candidates, or (with ``cutoff`` now) what the next edition would take."""
    prev = session.scalar(select(Edition.cutoff)
                          .where(Edition.slot == slot, Edition.cutoff < cutoff)
                          .order_by(Edition.cutoff.desc()).limit(1))
    return candidate_entries(session, since=prev, until=cutoff)


def sent_map(session: Session, entry_ids: list[str]) -> dict[int, list[int]]:
    """subscriber id → indices (into ``entry_ids``) of papers already sent to them."""
    position = {eid: i for i, eid in enumerate(entry_ids)}
    out: dict[int, list[int]] = defaultdict(list)
    for start in range(0, len(entry_ids), 900):
        chunk = entry_ids[start : start + 900]
        rows = session.execute(
            select(SentEntry.subscriber_id, SentEntry.entry_id).where(SentEntry.entry_id.in_(chunk))
        )
        for sub_id, entry_id in rows:
            out[sub_id].append(position[entry_id])
    return out


def load_acronyms(settings: Settings, entries: list[RankEntry]) -> Acronyms:
    table = Acronyms.load(settings.ranking.acronyms)
    for e in entries:
        table.learn(e.title)
        table.learn(e.abstract)
    return table


@dataclass
class Selection:
    """Everything needed to rank one edition (or a preview of the next one)."""

    entries: list[RankEntry]
    ranker: Ranker
    sent: dict[int, list[int]]

    @classmethod
    def build(cls, settings: Settings, session: Session, rows: list[Entry],
              today: dt.date, *, ignore_sent: bool = False) -> Selection:
        entries = [RankEntry.of(e) for e in rows]
        corpus = Corpus(entries, load_acronyms(settings, entries), settings.ranking, today)
        sent = {} if ignore_sent else sent_map(session, [e.id for e in entries])
        return cls(entries, Ranker(corpus, settings.ranking), sent)
