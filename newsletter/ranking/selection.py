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

from newsletter.config import RankingConfig
from newsletter.ranking.corpus import Corpus, RankEntry
from newsletter.ranking.engine import Ranker
from newsletter.ranking.feedback import Votes
from newsletter.ranking.related import RelatedTerms
from newsletter.ranking.text import Acronyms


class VoteLike(Protocol):
    """One vote (``store.votes.VoteRow``)."""

    @property
    def subscriber_id(self) -> int: ...

    @property
    def entry_id(self) -> str: ...

    @property
    def direction(self) -> int: ...

    @property
    def created_at(self) -> dt.datetime: ...


class VoteHistoryLike(Protocol):
    """The votes that count, the papers voted on and the removed learned terms
    (``store.votes.VoteHistory``)."""

    @property
    def votes(self) -> Sequence[VoteLike]: ...

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
    the indices into ``entry_ids`` of papers they voted on."""
    if not history.votes:
        return None, {}
    position = {eid: i for i, eid in enumerate(entry_ids)}
    papers: dict[str, int] = {}
    texts: list[RankEntry] = []
    for e in history.papers:
        papers[e.id] = len(texts)
        texts.append(RankEntry.of(e))
    voted: dict[int, list[int]] = defaultdict(list)
    data = []
    for v in history.votes:
        if v.entry_id in position:
            voted[v.subscriber_id].append(position[v.entry_id])
        if v.entry_id in papers:
            data.append((v.subscriber_id, papers[v.entry_id], 1 if v.direction > 0 else -1,
                         max((today - v.created_at.date()).days, 0)))
    return Votes.of(data, texts, dict(history.mutes)), dict(voted)
