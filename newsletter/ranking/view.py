"""Ranked picks as plain data: what ``newsletter rank --json``, the preview and the
web preferences page show, built by one function so they never disagree; and what
votes teach, in words. The callers read the database (``newsletter/service/ranking``);
this takes a built ``Selection``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from newsletter.profile import parse_profile
from newsletter.ranking.feedback import Learned
from newsletter.ranking.selection import Selection


def pick_dicts(selection: Selection, chunk: Any, row: int, keywords: str) -> list[
        dict[str, Any]]:
    out = []
    section = "trending" if chunk.trending[row] else "matches"
    picks = [int(i) for i in chunk.picks[row] if i >= 0]
    # A trending pick is not a match nor a fill: only matches and fills are explained so.
    key = None if chunk.trending[row] else chunk.keys[row]
    explanations = selection.ranker.explain_many(keywords, picks, key=key)
    for rank, (idx, ex) in enumerate(zip(picks, explanations, strict=True), 1):
        e = selection.entries[idx]
        out.append({
            "rank": rank,
            "id": e.id,
            "title": e.title,
            "score": round(float(chunk.scores[row][rank - 1]), 4),
            "parts": {"relevance": ex.relevance, "popularity": ex.popularity,
                      "recency": ex.recency},
            "matched": [t for t, _ in ex.matched],
            "also_like": [{"term": h.term, "value": h.value, "liked": h.liked,
                           "disliked": h.disliked} for h in ex.learned],
            "because": ex.because,  # a fill: the liked paper's title ("" otherwise)
            "why": ex.why,
            "section": section,
        })
    return out


@dataclass(frozen=True)
class VoteOutcome:
    """What a vote did, in words for the thank-you page and the CLI."""

    email: str
    paper_id: str
    title: str
    direction: int
    replaced: int | None
    terms: list[str]  # the learned terms this vote moved, as the paper wrote them

    @property
    def message(self) -> str:
        more = self.direction > 0
        if self.terms:
            listed = ", ".join(self.terms)
            return f"We'll show {'more' if more else 'less'} on {listed}."
        return f"We'll show {'more' if more else 'fewer'} papers like this one."


def learned_terms(selection: Selection, subscriber_id: int, keywords: str) -> list[Learned]:
    """What a subscriber's votes teach (in ``selection``, built with their votes),
    strongest first."""
    learner = selection.ranker.learner
    if learner is None:
        return []
    written = {t.fid for t in selection.ranker._terms_of(keywords)}
    return learner.learned(subscriber_id, written)


def moved_terms(selection: Selection, learned: list[Learned], paper_id: str,
                direction: int) -> list[str]:
    """The learned terms (of ``learned``) a vote on ``paper_id`` moved its way, as the
    paper wrote them: what the thank-you page names."""
    learner = selection.ranker.learner
    if learner is None:
        return []
    mine = set(learner.paper_fids(paper_id))
    return [t.term for t in learned if t.fid in mine and (t.weight > 0) == (direction > 0)]


class SubscriberLike(Protocol):
    """What ranking needs of a subscriber: the store's ``SubscriberRow`` is one (the
    store is the caller's to read, so ranking names the fields, not the class)."""

    @property
    def id(self) -> int: ...

    @property
    def email(self) -> str: ...

    @property
    def keywords(self) -> str: ...


def rank_dicts(selection: Selection, subscribers: Iterable[SubscriberLike],
               limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Per subscriber: the picks ``selection`` makes, as ``newsletter rank --json``
    prints them."""
    people: dict[int, SubscriberLike] = {}

    def keyed() -> Iterator[tuple[int, str]]:
        for person in subscribers:
            people[person.id] = person
            yield person.id, person.keywords

    for chunk in selection.ranker.rank(keyed(), sent=selection.sent, k=limit, chunk_size=2000):
        for row, key in enumerate(chunk.keys):
            person = people.pop(key)
            yield {"subscriber": person.email, "profile": str(parse_profile(person.keywords)),
                   "candidates": len(selection.entries),
                   "picks": pick_dicts(selection, chunk, row, person.keywords)}
