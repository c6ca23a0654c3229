"""What ranking one edition needs: its papers as rank entries, the corpus, and the
papers each subscriber already had (excluded per subscriber by the ranker).

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

from newsletter.config import Settings
from newsletter.ranking.engine import Corpus, RankEntry, Ranker
from newsletter.ranking.feedback import Votes
from newsletter.ranking.related import RelatedTerms
from newsletter.ranking.text import Acronyms
from newsletter.store.models import Entry, LearnedMute, Vote
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
        cfg = settings.ranking
        related = RelatedTerms.load(cfg.related_terms) if cfg.expand_related else None
        corpus = Corpus(entries, load_acronyms(settings, entries), cfg, today, related)
        sent = {} if ignore_sent else sent_map(session, [e.id for e in entries])
        votes, voted = load_votes(session, [e.id for e in entries], today)
        for sub_id, indices in voted.items():  # a paper voted on is never shown again
            sent.setdefault(sub_id, []).extend(indices)
        return cls(entries, Ranker(corpus, cfg, votes), sent)


def load_votes(session: Session, entry_ids: list[str], today: dt.date) -> tuple[
        Votes | None, dict[int, list[int]]]:
    """Every vote, as the ranker's arrays (None when nobody voted), and per subscriber
    the indices into ``entry_ids`` of papers they voted on."""
    rows = session.execute(select(Vote.subscriber_id, Vote.entry_id, Vote.direction,
                                  Vote.created_at)).all()
    if not rows:
        return None, {}
    position = {eid: i for i, eid in enumerate(entry_ids)}
    voted: dict[int, list[int]] = defaultdict(list)
    ids = sorted({r[1] for r in rows})
    papers: dict[str, int] = {}
    texts: list[RankEntry] = []
    for start in range(0, len(ids), 900):
        for e in session.scalars(select(Entry).where(Entry.id.in_(ids[start : start + 900]))):
            papers[e.id] = len(texts)
            texts.append(RankEntry.of(e))
    data = []
    for sub_id, entry_id, direction, at in rows:
        if entry_id in position:
            voted[sub_id].append(position[entry_id])
        if entry_id in papers:
            data.append((sub_id, papers[entry_id], 1 if direction > 0 else -1,
                         max((today - at.date()).days, 0)))
    mutes: dict[int, set[str]] = defaultdict(set)
    for sub_id, term in session.execute(select(LearnedMute.subscriber_id, LearnedMute.term)):
        mutes[sub_id].add(term)
    return (Votes.of(data, texts, {k: frozenset(v) for k, v in mutes.items()}),
            dict(voted))
