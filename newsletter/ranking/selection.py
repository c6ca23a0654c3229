"""What ranking one edition needs: its papers as rank entries, the corpus, and the
papers each subscriber already had (excluded per subscriber by the ranker).

An edition's candidates are the papers that *arrived* since the previous
edition (the first edition takes everything stored), not a publication-date
window: daily-papers sites feature papers whose arXiv dates are months old.
Papers already sent to a subscriber are excluded per subscriber by the ranker.

The ranking reads nothing itself: the caller passes the papers, what was sent
(``store.queries.sent_map``) and the votes (``store.votes.vote_history``), so the
same selection is built from a database, a sample file or a test's lists.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from newsletter.config import RankingConfig
from newsletter.ranking.corpus import Corpus, RankEntry
from newsletter.ranking.engine import Ranker
from newsletter.ranking.feedback import Votes
from newsletter.ranking.related import RelatedTerms
from newsletter.ranking.text import Acronyms


class VoteHistoryLike(Protocol):
    """The votes that count as columns, the papers voted on and the removed learned
    terms (``store.votes.VoteHistory``)."""

    @property
    def subscribers(self) -> np.ndarray: ...  # int64, each vote's subscriber

    @property
    def papers_of(self) -> np.ndarray: ...  # each vote's paper, an index into ``papers``

    @property
    def directions(self) -> np.ndarray: ...  # +1 / -1

    @property
    def days(self) -> np.ndarray: ...  # datetime64[D], the day of each vote

    @property
    def papers(self) -> Sequence[Any]: ...

    @property
    def mutes(self) -> Mapping[int, frozenset[str]]: ...


def load_acronyms(cfg: RankingConfig, entries: list[RankEntry]) -> Acronyms:
    table = Acronyms.load(cfg.acronyms)
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
    def build(cls, cfg: RankingConfig, rows: Sequence[Any], today: dt.date, *,
              sent: Mapping[int, list[int]] | None = None,
              history: VoteHistoryLike | None = None) -> Selection:
        """``rows``: the papers (stored entries or anything shaped like them); ``sent``:
        per subscriber, indices into ``rows`` of papers they already had (None: nobody
        had any); ``history``: the votes that count (None: nobody's; ``for_subscriber``
        adds one subscriber's)."""
        entries = [RankEntry.of(e) for e in rows]
        related = RelatedTerms.load(cfg.related_terms) if cfg.expand_related else None
        corpus = Corpus(entries, load_acronyms(cfg, entries), cfg, today, related)
        had = dict(sent or {})  # the caller's lists are not changed
        learned, voted = (learn_votes(history, [e.id for e in entries], today)
                          if history is not None else (None, {}))
        for sub_id, indices in voted.items():  # a paper voted on is never shown again
            had[sub_id] = [*had.get(sub_id, ()), *indices]
        return cls(entries, Ranker(corpus, cfg, learned), had)

    def for_subscriber(self, subscriber_id: int, history: VoteHistoryLike) -> Selection:
        """The same papers and corpus with only this subscriber's votes (``history``,
        theirs alone) counting, and the papers they voted on never picked: cheap, the
        corpus is shared."""
        corpus = self.ranker.corpus
        learned, voted = learn_votes(history, [e.id for e in self.entries], corpus.today)
        sent = {subscriber_id: list(self.sent.get(subscriber_id, ()))
                + voted.get(subscriber_id, [])}
        return Selection(self.entries, Ranker(corpus, self.ranker.cfg, learned), sent)


def learn_votes(history: VoteHistoryLike, entry_ids: list[str], today: dt.date,
                ) -> tuple[Votes | None, dict[int, list[int]]]:
    """The votes as the ranker's arrays (None when nobody voted), and per subscriber
    the indices into ``entry_ids`` of papers they voted on (in the history's order).
    Array work throughout but for the votes on ``entry_ids`` themselves (today's
    papers: few next to everyone's votes)."""
    if not len(history.subscribers):
        return None, {}
    position = {eid: i for i, eid in enumerate(entry_ids)}
    texts = [RankEntry.of(e) for e in history.papers]
    # each voted paper's index into ``entry_ids``, -1 when it is not one of them
    among = np.fromiter((position.get(e.id, -1) for e in history.papers), np.int64,
                        len(history.papers))
    at = among[history.papers_of]
    voted: dict[int, list[int]] = defaultdict(list)
    hits = np.flatnonzero(at >= 0)
    for sub_id, pos in zip(history.subscribers[hits].tolist(), at[hits].tolist(),
                           strict=True):
        voted[sub_id].append(pos)
    ages = np.maximum((np.datetime64(today, "D") - history.days).astype(np.int64), 0)
    learned = Votes.arrays(history.subscribers, history.papers_of,
                           np.where(history.directions > 0, 1, -1), ages, texts,
                           dict(history.mutes))
    return learned, dict(voted)
