"""What ranking one edition needs: its papers as rank entries, the corpus, and the
papers each subscriber already had (excluded per subscriber by the ranker).

An edition's candidates are the papers that *arrived* since the previous
edition (the first edition takes everything stored), not a publication-date
window: daily-papers sites feature papers whose arXiv dates are months old.
Papers already sent to a subscriber are excluded per subscriber by the ranker.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from newsletter.config import Settings
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.text import Acronyms
from newsletter.store.models import Entry
from newsletter.store.queries import sent_map


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
