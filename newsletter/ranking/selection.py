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
              today: dt.date, *, ignore_sent: bool = False, votes: bool = True) -> Selection:
        """``votes=False``: nobody's votes count (``for_subscriber`` adds one's)."""
        entries = [RankEntry.of(e) for e in rows]
        cfg = settings.ranking
        related = RelatedTerms.load(cfg.related_terms) if cfg.expand_related else None
        corpus = Corpus(entries, load_acronyms(settings, entries), cfg, today, related)
        sent = {} if ignore_sent else sent_map(session, [e.id for e in entries])
        learned, voted = (load_votes(session, [e.id for e in entries], today) if votes
                          else (None, {}))
        for sub_id, indices in voted.items():  # a paper voted on is never shown again
            sent.setdefault(sub_id, []).extend(indices)
        return cls(entries, Ranker(corpus, cfg, learned), sent)

    def for_subscriber(self, session: Session, subscriber_id: int) -> Selection:
        """The same papers and corpus with only this subscriber's votes counting (and
        the papers they voted on never picked): cheap, the corpus is shared."""
        corpus = self.ranker.corpus
        learned, voted = load_votes(session, [e.id for e in self.entries], corpus.today,
                                    subscriber_id)
        sent = {subscriber_id: list(self.sent.get(subscriber_id, ()))
                + voted.get(subscriber_id, [])}
        return Selection(self.entries, Ranker(corpus, self.ranker.cfg, learned), sent)


def load_votes(session: Session, entry_ids: list[str], today: dt.date,
               subscriber_id: int | None = None) -> tuple[Votes | None, dict[int, list[int]]]:
    """Every vote (or one subscriber's), as the ranker's arrays (None when nobody
    voted), and per subscriber the indices into ``entry_ids`` of papers they voted on."""
    query = select(Vote.subscriber_id, Vote.entry_id, Vote.direction, Vote.created_at)
    mutes_query = select(LearnedMute.subscriber_id, LearnedMute.term)
    if subscriber_id is not None:
        query = query.where(Vote.subscriber_id == subscriber_id)
        mutes_query = mutes_query.where(LearnedMute.subscriber_id == subscriber_id)
    rows = session.execute(query).all()
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
    for sub_id, term in session.execute(mutes_query):
        mutes[sub_id].add(term)
    return (Votes.of(data, texts, {k: frozenset(v) for k, v in mutes.items()}),
            dict(voted))
